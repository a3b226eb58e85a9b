/* A minimal Lambda runtime in C for tests and benchmarks: it speaks the
 * Runtime API over one keep-alive connection and acts on the event:
 *   {"action":"echo", ...}      answer with the event itself (the default)
 *   {"action":"sleep","ms":N}   sleep, then answer
 *   {"action":"alloc","mb":N}   allocate and touch N MB, then answer
 *   {"action":"exit","code":N}  exit without answering
 *   {"action":"error"}          report a function error
 *   {"action":"log"}            print a line to stdout and stderr, then answer
 *   {"action":"big","bytes":N}  answer with a JSON string of about N bytes
 *   {"action":"probe"}          answer with the working directory, the
 *                               variables GREETING and STAGE, and whether
 *                               ./data.txt and /gone.txt exist, and the
 *                               first line of ./data.txt
 *   {"action":"cpus"}           answer with the CPUs it may run on:
 *                               {"cpus":[0,1]}
 *   {"action":"read","path":P,"bytes":N}
 *                               read up to N bytes of file P (all of it when
 *                               N is 0 or missing) and answer with the count
 *                               and an XOR checksum: {"read":n,"sum":s}
 * Used as /var/task/bootstrap of a `provided` function. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int conn = -1;
static char host[64];
static int port;

static void connect_api(void) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  inet_pton(AF_INET, host, &sa.sin_addr);
  conn = socket(AF_INET, SOCK_STREAM, 0);
  if (conn < 0 || connect(conn, (struct sockaddr*)&sa, sizeof sa) != 0) {
    perror("connect");
    exit(70);
  }
  int one = 1;
  setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void send_all(const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = write(conn, data, n);
    if (w <= 0) {
      perror("write");
      exit(71);
    }
    data += w;
    n -= (size_t)w;
  }
}

/* Reads one HTTP response; returns the body (malloc'd) and fills request_id. */
static char* read_response(char* request_id, size_t id_size, size_t* body_len) {
  static char buf[1 << 16];
  size_t have = 0;
  char* end = NULL;
  while (!end) {
    ssize_t r = read(conn, buf + have, sizeof buf - 1 - have);
    if (r <= 0) {
      exit(72);
    }
    have += (size_t)r;
    buf[have] = 0;
    end = strstr(buf, "\r\n\r\n");
  }
  size_t header_len = (size_t)(end - buf) + 4;
  size_t content_length = 0;
  for (char* line = buf; line < end; line = strstr(line, "\r\n") + 2) {
    if (strncasecmp(line, "Content-Length:", 15) == 0)
      content_length = strtoul(line + 15, NULL, 10);
    if (request_id && strncasecmp(line, "Lambda-Runtime-Aws-Request-Id:", 30) == 0) {
      char* v = line + 30;
      while (*v == ' ')
        ++v;
      size_t n = strcspn(v, "\r");
      if (n >= id_size)
        n = id_size - 1;
      memcpy(request_id, v, n);
      request_id[n] = 0;
    }
  }
  char* body = malloc(content_length + 1);
  size_t got = have - header_len;
  if (got > content_length)
    got = content_length;
  memcpy(body, buf + header_len, got);
  while (got < content_length) {
    ssize_t r = read(conn, body + got, content_length - got);
    if (r <= 0)
      exit(73);
    got += (size_t)r;
  }
  body[content_length] = 0;
  *body_len = content_length;
  return body;
}

static void post(const char* path, const char* extra_header, const char* body, size_t n) {
  char head[512];
  int h = snprintf(head, sizeof head,
                   "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n%s\r\n", path, host, n,
                   extra_header);
  /* One write for head and body: two small writes would meet Nagle's
   * algorithm and the server's delayed ACK (40 ms). */
  char* msg = malloc((size_t)h + n);
  memcpy(msg, head, (size_t)h);
  memcpy(msg + h, body, n);
  send_all(msg, (size_t)h + n);
  free(msg);
  size_t len;
  free(read_response(NULL, 0, &len));
}

/* Copies the JSON string value of `key` (no escapes) into out; 0 if absent. */
static int string_after(const char* body, const char* key, char* out, size_t size) {
  const char* p = strstr(body, key);
  if (!p || !(p = strchr(p + strlen(key), ':')) || !(p = strchr(p, '"')))
    return 0;
  ++p;
  size_t n = strcspn(p, "\"");
  if (n >= size)
    return 0;
  memcpy(out, p, n);
  out[n] = 0;
  return 1;
}

static long number_after(const char* body, const char* key) {
  const char* p = strstr(body, key);
  if (!p)
    return 0;
  p = strchr(p, ':');
  return p ? strtol(p + 1, NULL, 10) : 0;
}

int main(void) {
  const char* api = getenv("AWS_LAMBDA_RUNTIME_API");
  if (!api || sscanf(api, "%63[^:]:%d", host, &port) != 2) {
    fprintf(stderr, "AWS_LAMBDA_RUNTIME_API not set\n");
    return 64;
  }
  connect_api();
  for (;;) {
    char id[128] = "";
    static const char next[] = "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(next, sizeof next - 1);
    size_t len;
    char* event = read_response(id, sizeof id, &len);
    char path[256];
    snprintf(path, sizeof path, "/2018-06-01/runtime/invocation/%s/response", id);
    if (strstr(event, "\"sleep\"")) {
      long ms = number_after(event, "\"ms\"");
      struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    } else if (strstr(event, "\"alloc\"")) {
      long mb = number_after(event, "\"mb\"");
      for (long i = 0; i < mb; ++i) {
        char* p = malloc(1 << 20);
        if (p)
          memset(p, 1, 1 << 20);
      }
    } else if (strstr(event, "\"exit\"")) {
      exit((int)number_after(event, "\"code\""));
    } else if (strstr(event, "\"error\"")) {
      static const char err[] =
        "{\"errorMessage\":\"it failed\",\"errorType\":\"TestError\",\"stackTrace\":[]}";
      snprintf(path, sizeof path, "/2018-06-01/runtime/invocation/%s/error", id);
      post(path, "Lambda-Runtime-Function-Error-Type: TestError\r\n", err, sizeof err - 1);
      free(event);
      continue;
    } else if (strstr(event, "\"big\"")) {
      long bytes = number_after(event, "\"bytes\"");
      char* big = malloc((size_t)bytes + 2);
      memset(big, 'x', (size_t)bytes + 2);
      big[0] = '"';
      big[bytes + 1] = '"';
      post(path, "", big, (size_t)bytes + 2);
      free(big);
      free(event);
      continue;
    } else if (strstr(event, "\"probe\"")) {
      char cwd[512] = "";
      if (!getcwd(cwd, sizeof cwd))
        strcpy(cwd, "?");
      char line[128] = "";
      FILE* f = fopen("data.txt", "r");
      if (f) {
        if (!fgets(line, sizeof line, f))
          line[0] = 0;
        fclose(f);
        line[strcspn(line, "\r\n\"\\")] = 0;
      }
      const char* greeting = getenv("GREETING");
      const char* stage = getenv("STAGE");
      char out[1024];
      int n = snprintf(out, sizeof out,
                       "{\"cwd\":\"%s\",\"greeting\":\"%s\",\"stage\":\"%s\",\"data\":%s,"
                       "\"data_line\":\"%s\",\"gone\":%s}",
                       cwd, greeting ? greeting : "", stage ? stage : "",
                       f ? "true" : "false", line, access("/gone.txt", F_OK) == 0 ? "true" : "false");
      post(path, "", out, (size_t)n);
      free(event);
      continue;
    } else if (strstr(event, "\"cpus\"")) {
      cpu_set_t set;
      CPU_ZERO(&set);
      char out[4096];
      size_t n = (size_t)snprintf(out, sizeof out, "{\"cpus\":[");
      if (sched_getaffinity(0, sizeof set, &set) == 0)
        for (int cpu = 0; cpu < CPU_SETSIZE && n + 16 < sizeof out; ++cpu)
          if (CPU_ISSET(cpu, &set))
            n += (size_t)snprintf(out + n, sizeof out - n, "%s%d", out[n - 1] == '[' ? "" : ",", cpu);
      n += (size_t)snprintf(out + n, sizeof out - n, "]}");
      post(path, "", out, n);
      free(event);
      continue;
    } else if (strstr(event, "\"read\"")) {
      char file[512];
      long want = number_after(event, "\"bytes\"");
      long got = -1;
      unsigned long sum = 0;
      FILE* f = string_after(event, "\"path\"", file, sizeof file) ? fopen(file, "rb") : NULL;
      if (f) {
        static unsigned char buf[1 << 16];
        got = 0;
        while (want <= 0 || got < want) {
          size_t ask = sizeof buf;
          if (want > 0 && (long)ask > want - got)
            ask = (size_t)(want - got);
          size_t r = fread(buf, 1, ask, f);
          if (r == 0)
            break;
          /* A cheap checksum (XOR of 8-byte words; vectorised): the data is
           * touched, and reading costs what it costs for any function. */
          size_t words = r / sizeof sum;
          for (size_t i = 0; i < words; ++i) {
            unsigned long w;
            memcpy(&w, buf + i * sizeof w, sizeof w);
            sum ^= w;
          }
          for (size_t i = words * sizeof sum; i < r; ++i)
            sum ^= buf[i];
          got += (long)r;
        }
        fclose(f);
      }
      char out[128];
      int n = snprintf(out, sizeof out, "{\"read\":%ld,\"sum\":%lu}", got, sum);
      post(path, "", out, (size_t)n);
      free(event);
      continue;
    } else if (strstr(event, "\"log\"")) {
      printf("hello from stdout %s\n", id);
      fflush(stdout);
      fprintf(stderr, "hello from stderr\n");
    }
    post(path, "", event, len);
    free(event);
  }
}
