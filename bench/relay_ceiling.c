/* The ceiling of the warm invoke path on this machine: an HTTP relay with
 * nothing but sockets between a client and N Lambda runtimes.
 *
 *   relay_ceiling RUNTIME N [THREADS]
 *
 * Starts N copies of the runtime binary RUNTIME (AWS_LAMBDA_RUNTIME_API
 * points at the relay), listens for clients on a free 127.0.0.1 port, prints
 * "port P" once every runtime waits in /next, and runs until killed. Each
 * client request is handed to an idle runtime as its next event; the
 * runtime's /response is answered with 202 and its body goes back to the
 * client as a 200. This is the same exchange nimbusd does for a warm invoke
 * (client HTTP, Runtime API /next response, /response and 202, the next
 * /next), without sandboxes, actors, auth, logs or metrics: what is left is
 * the kernel's cost of three loopback HTTP exchanges and of waking the
 * runtime twice per request. bench/invoke_bench.py runs it next to nimbusd
 * so that the distance to this ceiling is measured in the same run.
 *
 * THREADS (default 1) event loops; each owns its share of the runtimes and
 * of the client connections (SO_REUSEPORT). Plain epoll, one buffer per
 * connection, small messages only (the benchmark's are a few bytes): a
 * request or response over the buffer size ends the connection.
 *
 * Scheduled as nimbusd schedules its own: the event loops at nice -5 (the
 * default of [api] io_threads_nice; when allowed), the runtimes at nice 0 as
 * SCHED_BATCH (as nimbus-jail starts them), so that the ceiling has the same
 * help from the scheduler as nimbusd. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum { buf_size = 65536, max_conns = 4096, loop_nice = -5 };

enum kind { client_listener, runtime_listener, client, runtime };

struct conn {
  enum kind kind;
  int fd;
  size_t have;
  char buf[buf_size];
  struct conn* peer; /* client <-> runtime while an event is out */
  int waiting;       /* runtime: parked in /next */
  struct conn* next_idle;
  struct conn* next_pending; /* client: queued for a runtime */
  char pending_body[buf_size];
  size_t pending_len;
};

struct loop {
  int ep;
  struct conn* idle;     /* runtimes waiting in /next */
  struct conn* pending;  /* clients whose request waits for a runtime */
  struct conn* pending_tail;
  unsigned long seq;
  int client_port;
  int runtime_port;
  int ready;
};

static const char* runtime_binary;

static int listen_on(int port, int reuse) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse)
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr*)&sa, sizeof sa) != 0 || listen(fd, 1024) != 0) {
    perror("listen");
    exit(1);
  }
  socklen_t len = sizeof sa;
  getsockname(fd, (struct sockaddr*)&sa, &len);
  return fd;
}

static int port_of(int fd) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  getsockname(fd, (struct sockaddr*)&sa, &len);
  return ntohs(sa.sin_port);
}

static struct conn* add(struct loop* l, int fd, enum kind k) {
  struct conn* c = calloc(1, sizeof *c);
  c->fd = fd;
  c->kind = k;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev);
  return c;
}

static void drop(struct loop* l, struct conn* c) {
  epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  if (c->peer)
    c->peer->peer = NULL;
  c->fd = -1; /* leaked on purpose: queues may still point here */
}

static int send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && errno == EAGAIN) {
      /* Small messages on loopback: the buffer is never full for long. */
      struct timespec ts = {0, 10000};
      nanosleep(&ts, NULL);
      continue;
    }
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* One complete request in c->buf: returns its total length and sets the
 * body, or 0 when more bytes are needed, -1 when it is malformed. */
static long parse(struct conn* c, const char** body, size_t* body_len) {
  char* end = memmem(c->buf, c->have, "\r\n\r\n", 4);
  if (!end)
    return c->have >= buf_size ? -1 : 0;
  size_t head = (size_t)(end - c->buf) + 4;
  size_t len = 0;
  for (char* p = c->buf; p < end; ++p)
    if ((p == c->buf || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0)
      len = strtoul(p + 15, NULL, 10);
  if (head + len > buf_size)
    return -1;
  if (c->have < head + len)
    return 0;
  *body = c->buf + head;
  *body_len = len;
  return (long)(head + len);
}

static void dispatch(struct loop* l, struct conn* rt, struct conn* cl, const char* body, size_t n) {
  char head[512];
  unsigned long id = ++l->seq;
  int h = snprintf(head, sizeof head,
                   "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   "Lambda-Runtime-Aws-Request-Id: %lu\r\nLambda-Runtime-Deadline-Ms: 0\r\n"
                   "Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:0:function:f\r\n"
                   "Content-Length: %zu\r\n\r\n",
                   id, n);
  char msg[buf_size + 512];
  memcpy(msg, head, (size_t)h);
  memcpy(msg + h, body, n);
  rt->waiting = 0;
  rt->peer = cl;
  cl->peer = rt;
  if (send_all(rt->fd, msg, (size_t)h + n) != 0)
    drop(l, rt);
}

/* The next complete request of c, or 0 (incomplete, or malformed: then c
 * is dropped). */
static long next_request(struct loop* l, struct conn* c, const char** body, size_t* n) {
  long used = parse(c, body, n);
  if (used < 0) {
    drop(l, c);
    return 0;
  }
  return used;
}

static void consume(struct conn* c, long used) {
  memmove(c->buf, c->buf + used, c->have - (size_t)used);
  c->have -= (size_t)used;
}

static void on_client(struct loop* l, struct conn* c) {
  const char* body;
  size_t n;
  long used = next_request(l, c, &body, &n);
  if (used == 0)
    return;
  /* One request in flight per connection (wrk does not pipeline). */
  struct conn* rt = l->idle;
  if (rt) {
    l->idle = rt->next_idle;
    dispatch(l, rt, c, body, n);
  } else {
    memcpy(c->pending_body, body, n);
    c->pending_len = n;
    c->next_pending = NULL;
    if (l->pending_tail)
      l->pending_tail->next_pending = c;
    else
      l->pending = c;
    l->pending_tail = c;
  }
  consume(c, used);
}

static void on_runtime(struct loop* l, struct conn* c) {
  for (;;) {
    const char* body;
    size_t n;
    long used = next_request(l, c, &body, &n);
    if (used == 0)
      return;
    if (strncmp(c->buf, "GET ", 4) == 0) {
      if (!c->waiting) {
        c->waiting = 1;
        ++l->ready;
      }
      while (l->pending && l->pending->fd < 0)
        l->pending = l->pending->next_pending;
      if (l->pending) {
        struct conn* cl = l->pending;
        l->pending = cl->next_pending;
        if (!l->pending)
          l->pending_tail = NULL;
        dispatch(l, c, cl, cl->pending_body, cl->pending_len);
      } else {
        c->next_idle = l->idle;
        l->idle = c;
      }
    } else {
      static const char accepted[] = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                                     "Content-Length: 15\r\n\r\n{\"status\":\"OK\"}";
      send_all(c->fd, accepted, sizeof accepted - 1);
      struct conn* cl = c->peer;
      c->peer = NULL;
      if (cl && cl->fd >= 0) {
        cl->peer = NULL;
        char msg[buf_size + 256];
        int h = snprintf(msg, 256,
                         "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         n);
        memcpy(msg + h, body, n);
        if (send_all(cl->fd, msg, (size_t)h + n) != 0)
          drop(l, cl);
      }
    }
    consume(c, used);
  }
}

static void spawn_runtimes(int port, int n) {
  char api[64];
  snprintf(api, sizeof api, "127.0.0.1:%d", port);
  for (int i = 0; i < n; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      /* The loop thread's nice value is inherited: back to 0. */
      setpriority(PRIO_PROCESS, 0, 0);
      struct sched_param no_priority = {0};
      sched_setscheduler(0, SCHED_BATCH, &no_priority);
      setenv("AWS_LAMBDA_RUNTIME_API", api, 1);
      execl(runtime_binary, runtime_binary, (char*)NULL);
      _exit(127);
    }
  }
}

static int runtimes_per_loop;
static int shared_client_port;
static pthread_mutex_t ready_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cond = PTHREAD_COND_INITIALIZER;
static int loops_ready;

static void* run(void* arg) {
  struct loop* l = arg;
  setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), loop_nice);
  l->ep = epoll_create1(EPOLL_CLOEXEC);
  int rl = listen_on(0, 0);
  l->runtime_port = port_of(rl);
  add(l, rl, runtime_listener);
  int cfd = listen_on(shared_client_port, 1);
  add(l, cfd, client_listener);
  spawn_runtimes(l->runtime_port, runtimes_per_loop);
  int announced = 0;
  struct epoll_event evs[64];
  for (;;) {
    if (!announced && l->ready >= runtimes_per_loop) {
      announced = 1;
      pthread_mutex_lock(&ready_lock);
      ++loops_ready;
      pthread_cond_broadcast(&ready_cond);
      pthread_mutex_unlock(&ready_lock);
    }
    int n = epoll_wait(l->ep, evs, 64, -1);
    for (int i = 0; i < n; ++i) {
      struct conn* c = evs[i].data.ptr;
      if (c->kind == client_listener || c->kind == runtime_listener) {
        int fd;
        while ((fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          add(l, fd, c->kind == client_listener ? client : runtime);
        }
        continue;
      }
      if (c->fd < 0)
        continue;
      ssize_t r = recv(c->fd, c->buf + c->have, buf_size - c->have, 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(l, c);
        continue;
      }
      if (r < 0)
        continue;
      c->have += (size_t)r;
      if (c->kind == client)
        on_client(l, c);
      else
        on_runtime(l, c);
    }
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: relay_ceiling RUNTIME N [THREADS]\n");
    return 64;
  }
  runtime_binary = argv[1];
  int n = atoi(argv[2]);
  int threads = argc > 3 ? atoi(argv[3]) : 1;
  if (n < 1 || threads < 1 || threads > 16) {
    fprintf(stderr, "relay_ceiling: bad N or THREADS\n");
    return 64;
  }
  signal(SIGPIPE, SIG_IGN);
  /* Reserve the client port: the first listener picks it, the others share
   * it through SO_REUSEPORT. */
  int probe = listen_on(0, 1);
  shared_client_port = port_of(probe);
  runtimes_per_loop = (n + threads - 1) / threads;
  struct loop* loops = calloc((size_t)threads, sizeof *loops);
  for (int i = 0; i < threads; ++i) {
    pthread_t t;
    pthread_create(&t, NULL, run, &loops[i]);
  }
  pthread_mutex_lock(&ready_lock);
  while (loops_ready < threads)
    pthread_cond_wait(&ready_cond, &ready_lock);
  pthread_mutex_unlock(&ready_lock);
  close(probe); /* only the loops' listeners get connections now */
  printf("port %d\n", shared_client_port);
  fflush(stdout);
  for (;;)
    pause();
}
