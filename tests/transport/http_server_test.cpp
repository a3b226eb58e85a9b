#include "nimbus/transport/http_server.hpp"

#include "nimbus/storage/digest.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace nimbus::transport;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

long ms_since(steady::time_point t0) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0).count());
}

/// One parsed HTTP response.
struct reply {
  int status = 0;
  std::string status_line;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  std::optional<std::string> header(std::string_view name) const {
    for (const auto& [k, v] : headers)
      if (iequals(k, name))
        return v;
    return std::nullopt;
  }
};

/// A small blocking client on raw sockets: every wait has a timeout, so a
/// misbehaving server fails a test instead of hanging it.
class client {
public:
  explicit client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~client() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// Sends everything; false once the peer is gone.
  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0)
        return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  /// Reads one response (Content-Length framed, as the server always sends).
  /// A response to HEAD (`head_request`) advertises a length but has no body.
  std::optional<reply> read_response(std::chrono::milliseconds timeout = 3000ms, bool head_request = false) {
    auto deadline = steady::now() + timeout;
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (fill(deadline) <= 0)
        return std::nullopt;
    reply r;
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    size_t line_end = head.find("\r\n");
    std::string status_line = head.substr(0, line_end);
    if (status_line.size() < 12 || status_line.compare(0, 5, "HTTP/") != 0)
      return std::nullopt;
    r.status = std::stoi(status_line.substr(9, 3));
    r.status_line = status_line;
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t e = head.find("\r\n", pos);
      if (e == std::string::npos)
        e = head.size();
      std::string line = head.substr(pos, e - pos);
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ')
          value.erase(0, 1);
        r.headers.emplace_back(line.substr(0, colon), value);
      }
      pos = e + 2;
    }
    size_t length = r.header("Content-Length") && !head_request ? std::stoul(*r.header("Content-Length")) : 0;
    while (buf_.size() < length)
      if (fill(deadline) <= 0)
        return std::nullopt;
    r.body = buf_.substr(0, length);
    buf_.erase(0, length);
    return r;
  }

  /// True once the peer closed (EOF or reset) within `timeout`; any bytes
  /// that arrive meanwhile are kept.
  bool wait_closed(std::chrono::milliseconds timeout = 2000ms) {
    auto deadline = steady::now() + timeout;
    for (;;) {
      int n = fill(deadline);
      if (n == 0 || n == -2)
        return true;
      if (n == -1)
        return false;
    }
  }

  /// True when the peer has closed right now (non-blocking check).
  bool closed_now() { return wait_closed(0ms); }

private:
  /// >0 bytes read, 0 EOF, -1 timeout, -2 error (e.g. reset).
  int fill(steady::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()).count();
    pollfd p{fd_, POLLIN, 0};
    int pr = ::poll(&p, 1, static_cast<int>(std::max<long>(0, left)));
    if (pr == 0)
      return -1;
    if (pr < 0)
      return -2;
    char tmp[8192];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n < 0)
      return -2;
    buf_.append(tmp, static_cast<size_t>(n));
    return static_cast<int>(n);
  }

  int fd_ = -1;
  std::string buf_;
};

http_server_options test_options() {
  http_server_options o;
  o.port = 0;
  o.io_threads = 2;
  return o;
}

/// Hooks with a 1000-byte body limit and JSON error bodies; `on_request` is
/// left to each test.
http_server_hooks test_hooks() {
  http_server_hooks h;
  h.body_limit = [](const http_request&) -> uint64_t { return 1000; };
  h.too_large = [](const http_request&, uint64_t limit) {
    http_response r;
    r.status = 413;
    r.body = "{\"limit\":" + std::to_string(limit) + "}";
    return r;
  };
  h.bad_request = [](std::string_view reason, int status) {
    http_response r;
    r.status = status;
    r.body = "{\"reason\":\"" + std::string(reason) + "\"}";
    return r;
  };
  return h;
}

http_response text(std::string body, int status = 200) {
  http_response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

/// Collects requests (and their respond functions) that a handler holds.
struct held_requests {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::pair<http_request, respond_fn>> items;

  void add(http_request req, respond_fn respond) {
    {
      std::lock_guard lk(m);
      items.emplace_back(std::move(req), std::move(respond));
    }
    cv.notify_all();
  }
  bool wait_for(size_t n, std::chrono::milliseconds timeout = 3000ms) {
    std::unique_lock lk(m);
    return cv.wait_for(lk, timeout, [&] { return items.size() >= n; });
  }
  size_t size() {
    std::lock_guard lk(m);
    return items.size();
  }
  std::pair<http_request, respond_fn> take(size_t i) {
    std::lock_guard lk(m);
    return items.at(i);
  }
};

/// Joins on scope exit, so a failed REQUIRE does not hit std::terminate.
struct joiner {
  std::vector<std::thread>& threads;
  ~joiner() {
    for (auto& t : threads)
      if (t.joinable())
        t.join();
  }
};

std::string get(std::string_view target) { return "GET " + std::string(target) + " HTTP/1.1\r\nHost: x\r\n\r\n"; }

} // namespace

TEST_CASE("http server: simple GET round trip carries x-amzn-RequestId") {
  std::mutex m;
  std::optional<http_request> seen;
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request req, respond_fn respond) {
    {
      std::lock_guard lk(m);
      seen = req;
    }
    respond(text(R"({"ok":true})"));
  };
  http_server server(test_options(), hooks);
  REQUIRE(server.port() != 0);

  client c(server.port());
  REQUIRE(c.send("GET /2015-03-31/functions/f?Qualifier=1 HTTP/1.1\r\nHost: localhost\r\nX-Custom-Header: Value\r\n\r\n"));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == R"({"ok":true})");
  CHECK(r->header("Content-Length") == "11");
  CHECK(r->header("Content-Type") == "application/json");
  CHECK(r->header("Server") == "nimbus");
  REQUIRE(r->header("Date"));
  CHECK(r->header("Date")->size() == 29);
  CHECK(r->header("Date")->substr(26) == "GMT");

  std::lock_guard lk(m);
  REQUIRE(seen);
  REQUIRE(r->header("x-amzn-RequestId"));
  CHECK(*r->header("x-amzn-RequestId") == seen->request_id);
  CHECK(seen->request_id.size() == 36);
  CHECK(seen->method == "GET");
  CHECK(seen->target == "/2015-03-31/functions/f?Qualifier=1");
  REQUIRE(seen->headers.size() == 2);
  CHECK(seen->headers[0] == http_field{"Host", "localhost"});
  CHECK(seen->headers[1] == http_field{"X-Custom-Header", "Value"});
  CHECK(seen->remote.rfind("127.0.0.1:", 0) == 0);
  CHECK(seen->body.empty());
}

TEST_CASE("http server: without request ids none is made or sent") {
  std::mutex m;
  std::optional<http_request> seen;
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request req, respond_fn respond) {
    {
      std::lock_guard lk(m);
      seen = req;
    }
    respond(text("{}"));
  };
  auto options = test_options();
  options.request_ids = false;
  http_server server(options, hooks);
  client c(server.port());
  REQUIRE(c.send(get("/x")));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "{}");
  CHECK_FALSE(r->header("x-amzn-RequestId"));
  CHECK(r->header("Server") == "nimbus");
  std::lock_guard lk(m);
  REQUIRE(seen);
  CHECK(seen->request_id.empty());
}

TEST_CASE("http server: handler fields that could split a response, and framing fields, are dropped") {
  auto hooks = test_hooks();
  hooks.on_request = [](http_request req, respond_fn respond) {
    http_response r = text(req.target == "/big" ? std::string(100, 'b') : "ok");
    r.set_header("X-Split", "a\r\nX-Injected: yes");
    r.set_header("Bad Name", "v");
    r.set_header("Transfer-Encoding", "chunked");
    r.set_header("x-amzn-RequestId", "mine");
    r.set_header("Server", "other");
    r.set_header("Content-Type", "text/plain");
    // A header block larger than any read buffer, on the second response.
    if (req.target == "/big")
      r.set_header("X-Large", std::string(40000, 'v'));
    respond(std::move(r));
  };
  http_server server(test_options(), hooks);
  client c(server.port());
  REQUIRE(c.send(get("/small")));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status_line == "HTTP/1.1 200 OK");
  CHECK(r->body == "ok");
  CHECK_FALSE(r->header("X-Split"));
  CHECK_FALSE(r->header("X-Injected"));
  CHECK_FALSE(r->header("Transfer-Encoding"));
  CHECK(r->header("Content-Length") == "2");
  CHECK(r->header("Content-Type") == "text/plain");
  CHECK(r->header("Server") == "nimbus");
  REQUIRE(r->header("x-amzn-RequestId"));
  CHECK(r->header("x-amzn-RequestId")->size() == 36);
  // The same connection goes on with a large header block, then a small one.
  REQUIRE(c.send(get("/big")));
  r = c.read_response();
  REQUIRE(r);
  CHECK(r->body == std::string(100, 'b'));
  CHECK(r->header("X-Large") == std::string(40000, 'v'));
  REQUIRE(c.send(get("/small")));
  r = c.read_response();
  REQUIRE(r);
  CHECK(r->body == "ok");
  CHECK_FALSE(r->header("X-Large"));
}

TEST_CASE("http response: header lines are checked when added, found by header() and sent as they are") {
  http_response r;
  CHECK(r.add_header_line("Lambda-Runtime-Aws-Request-Id", "id-1"));
  CHECK(r.add_header_line("Content-Type", "text/plain"));
  CHECK_FALSE(r.add_header_line("X-Split", "a\r\nX-Injected: yes"));
  CHECK_FALSE(r.add_header_line("X-Nul", std::string("a\0b", 3)));
  CHECK_FALSE(r.add_header_line("Bad Name", "v"));
  CHECK_FALSE(r.add_header_line("Content-Length", "5"));
  CHECK_FALSE(r.add_header_line("connection", "close"));
  CHECK(r.header_lines == "Lambda-Runtime-Aws-Request-Id: id-1\r\nContent-Type: text/plain\r\n");
  CHECK(r.header("lambda-runtime-aws-request-id") == "id-1");
  CHECK(r.header("Content-Type") == "text/plain");
  CHECK_FALSE(r.header("X-Split"));
  CHECK_FALSE(r.header("Lambda-Runtime"));

  auto hooks = test_hooks();
  hooks.on_request = [](http_request, respond_fn respond) {
    http_response res;
    res.body = "plain";
    res.add_header_line("Content-Type", "text/plain");
    res.add_header_line("X-Line", "one");
    respond(std::move(res));
  };
  http_server server(test_options(), hooks);
  client c(server.port());
  REQUIRE(c.send(get("/x")));
  auto reply = c.read_response();
  REQUIRE(reply);
  CHECK(reply->body == "plain");
  CHECK(reply->header("X-Line") == "one");
  // The header line's Content-Type counts: no second, default one.
  CHECK(reply->header("Content-Type") == "text/plain");
  CHECK(std::count_if(reply->headers.begin(), reply->headers.end(),
                      [](const auto& f) { return iequals(f.first, "Content-Type"); })
        == 1);
}

TEST_CASE("http server: keep-alive serves two requests on one connection") {
  std::atomic<int> calls{0};
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request req, respond_fn respond) {
    ++calls;
    http_response r = text(req.method + " " + req.body);
    r.set_header("Content-Type", "text/plain");
    respond(std::move(r));
  };
  http_server server(test_options(), hooks);
  client c(server.port());

  REQUIRE(c.send(get("/one")));
  auto r1 = c.read_response();
  REQUIRE(r1);
  CHECK(r1->body == "GET ");
  CHECK(r1->header("Content-Type") == "text/plain");
  CHECK_FALSE(r1->header("Connection") == "close");

  REQUIRE(c.send("POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"));
  auto r2 = c.read_response();
  REQUIRE(r2);
  CHECK(r2->body == "POST hello");
  CHECK(calls == 2);
  CHECK(*r1->header("x-amzn-RequestId") != *r2->header("x-amzn-RequestId"));
  CHECK_FALSE(c.closed_now());
}

TEST_CASE("http server: response framing: status line, fields, HEAD, 204, HTTP/1.0") {
  auto hooks = test_hooks();
  hooks.on_request = [](http_request req, respond_fn respond) {
    if (req.target == "/missing") {
      respond(text("nope", 404));
    } else if (req.target == "/empty") {
      respond(text("dropped", 204));
    } else {
      http_response r = text("hello");
      r.set_header("Content-Length", "999"); // the server owns framing
      r.set_header("X-Custom", "yes");
      respond(std::move(r));
    }
  };
  http_server server(test_options(), hooks);
  client c(server.port());

  REQUIRE(c.send(get("/missing")));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status_line == "HTTP/1.1 404 Not Found");
  CHECK(r->body == "nope");
  CHECK(r->header("Content-Type") == "application/json");
  CHECK(r->header("Server") == "nimbus");
  CHECK(r->header("Date"));
  CHECK(r->header("x-amzn-RequestId"));
  CHECK_FALSE(r->header("Connection"));

  // HEAD: the length of the body GET would get, and no body bytes: the next
  // response on the connection must start right after the head.
  REQUIRE(c.send("HEAD /thing HTTP/1.1\r\nHost: x\r\n\r\n"));
  r = c.read_response(3000ms, true);
  REQUIRE(r);
  CHECK(r->status_line == "HTTP/1.1 200 OK");
  CHECK(r->header("Content-Length") == "5");
  CHECK(r->header("X-Custom") == "yes");
  int lengths = 0;
  for (const auto& [k, v] : r->headers)
    lengths += iequals(k, "Content-Length") ? 1 : 0;
  CHECK(lengths == 1);

  // 204: neither a body nor a Content-Length.
  REQUIRE(c.send(get("/empty")));
  r = c.read_response();
  REQUIRE(r);
  CHECK(r->status_line == "HTTP/1.1 204 No Content");
  CHECK_FALSE(r->header("Content-Length"));
  CHECK_FALSE(r->header("Content-Type"));

  REQUIRE(c.send(get("/thing")));
  r = c.read_response();
  REQUIRE(r);
  CHECK(r->body == "hello");

  // HTTP/1.0 keeps a connection only when asked to, and says so.
  client c10(server.port());
  REQUIRE(c10.send("GET /thing HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  r = c10.read_response();
  REQUIRE(r);
  CHECK(r->status_line == "HTTP/1.0 200 OK");
  CHECK(r->header("Connection") == "keep-alive");
  CHECK(r->body == "hello");
  REQUIRE(c10.send("GET /thing HTTP/1.0\r\n\r\n"));
  r = c10.read_response();
  REQUIRE(r);
  CHECK_FALSE(r->header("Connection"));
  CHECK(c10.wait_closed());
}

TEST_CASE("http server: a response larger than the socket buffer arrives whole to a slow reader") {
  // 16 MiB does not fit the socket buffers: the server sends what fits at
  // once and the rest as the client reads.
  std::string big(16 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>('a' + (i * 7 + i / 4093) % 26);
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request, respond_fn respond) { respond(text(big)); };
  http_server server(test_options(), hooks);
  client c(server.port());
  REQUIRE(c.send(get("/big")));
  std::this_thread::sleep_for(200ms);
  auto r = c.read_response(10000ms);
  REQUIRE(r);
  CHECK(r->body.size() == big.size());
  CHECK(r->body == big);
  // The connection is still usable afterwards.
  REQUIRE(c.send(get("/big")));
  r = c.read_response(10000ms);
  REQUIRE(r);
  CHECK(r->body.size() == big.size());
}

TEST_CASE("http server: Connection: close is honoured") {
  auto hooks = test_hooks();
  hooks.on_request = [](http_request, respond_fn respond) { respond(text("{}")); };
  http_server server(test_options(), hooks);
  client c(server.port());
  REQUIRE(c.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("Connection") == "close");
  CHECK(c.wait_closed());
}

TEST_CASE("http server: handler responds later from another thread") {
  std::vector<std::thread> workers;
  joiner join_workers{workers};
  std::mutex m;
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request req, respond_fn respond) {
    std::lock_guard lk(m);
    workers.emplace_back([respond, target = req.target] {
      std::this_thread::sleep_for(50ms);
      respond(text("{\"target\":\"" + target + "\"}"));
    });
  };
  http_server server(test_options(), hooks);
  client c(server.port());
  auto t0 = steady::now();
  REQUIRE(c.send(get("/later")));
  auto r = c.read_response();
  auto elapsed = ms_since(t0);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == R"({"target":"/later"})");
  CHECK(elapsed >= 45);
}

TEST_CASE("http server: pipelined responses go out in request order") {
  held_requests held;
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request req, respond_fn respond) { held.add(std::move(req), std::move(respond)); };
  http_server server(test_options(), hooks);
  client c(server.port());
  REQUIRE(c.send(get("/a") + get("/b") + get("/c")));
  REQUIRE(held.wait_for(3));

  std::vector<std::thread> answerer;
  joiner join_answerer{answerer};
  answerer.emplace_back([&] {
    for (size_t i = 3; i-- > 0;) {
      auto [req, respond] = held.take(i);
      respond(text(req.target));
      std::this_thread::sleep_for(10ms); // let a wrongly ordered write escape
    }
  });
  std::vector<std::string> bodies;
  for (int i = 0; i < 3; ++i) {
    auto r = c.read_response();
    REQUIRE(r);
    bodies.push_back(r->body);
  }
  CHECK(bodies == std::vector<std::string>{"/a", "/b", "/c"});
  CHECK(held.take(0).first.request_id != held.take(1).first.request_id);
}

TEST_CASE("http server: max_pipeline bounds the requests read ahead") {
  held_requests held;
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request req, respond_fn respond) { held.add(std::move(req), std::move(respond)); };
  auto options = test_options();
  options.max_pipeline = 2;
  http_server server(options, hooks);
  client c(server.port());
  REQUIRE(c.send(get("/1") + get("/2") + get("/3") + get("/4")));

  REQUIRE(held.wait_for(2));
  std::this_thread::sleep_for(200ms); // room for a wrong read-ahead to show
  CHECK(held.size() == 2);

  held.take(0).second(text("/1"));
  auto r1 = c.read_response();
  REQUIRE(r1);
  CHECK(r1->body == "/1");
  REQUIRE(held.wait_for(3));
  std::this_thread::sleep_for(100ms);
  CHECK(held.size() == 3);

  held.take(1).second(text("/2"));
  REQUIRE(held.wait_for(4));
  held.take(3).second(text("/4"));
  held.take(2).second(text("/3"));
  for (std::string expected : {"/2", "/3", "/4"}) {
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->body == expected);
  }
}

TEST_CASE("http server: body over the limit is refused from Content-Length alone") {
  std::atomic<int> calls{0};
  std::atomic<uint64_t> seen_limit{0};
  auto hooks = test_hooks();
  auto too_large = hooks.too_large;
  hooks.too_large = [&, too_large](const http_request& head, uint64_t limit) {
    seen_limit = limit;
    return too_large(head, limit);
  };
  hooks.on_request = [&](http_request, respond_fn respond) {
    ++calls;
    respond(text("{}"));
  };
  http_server server(test_options(), hooks); // deadlines at their (long) defaults
  client c(server.port());
  auto t0 = steady::now();
  REQUIRE(c.send("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"));
  auto r = c.read_response(2000ms);
  REQUIRE(r);
  CHECK(ms_since(t0) < 1500);
  CHECK(r->status == 413);
  CHECK(r->body == R"({"limit":1000})");
  CHECK(r->header("x-amzn-RequestId"));
  CHECK(r->header("Connection") == "close");
  CHECK(c.wait_closed());
  CHECK(seen_limit == 1000);
  CHECK(calls == 0);
}

TEST_CASE("http server: chunked body growing past the limit is refused") {
  std::atomic<int> calls{0};
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request, respond_fn respond) {
    ++calls;
    respond(text("{}"));
  };
  http_server server(test_options(), hooks);
  client c(server.port());
  std::string chunk(1500, 'x');
  REQUIRE(c.send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5DC\r\n" + chunk + "\r\n0\r\n\r\n"));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status == 413);
  CHECK(c.wait_closed());
  CHECK(calls == 0);
}

TEST_CASE("http server: header block over max_header_bytes is rejected") {
  std::atomic<int> calls{0};
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request, respond_fn respond) {
    ++calls;
    respond(text("{}"));
  };
  auto options = test_options();
  options.max_header_bytes = 1024;
  http_server server(options, hooks);
  client c(server.port());
  REQUIRE(c.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n"));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status >= 400);
  CHECK(r->status < 500);
  CHECK(r->header("x-amzn-RequestId"));
  CHECK(c.wait_closed());
  CHECK(calls == 0);
}

TEST_CASE("http server: Content-Length with Transfer-Encoding is rejected with 400") {
  std::atomic<int> calls{0};
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request, respond_fn respond) {
    ++calls;
    respond(text("{}"));
  };
  http_server server(test_options(), hooks);
  // Both orders; Beast itself only catches some of them.
  for (std::string fields : {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                             "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n",
                             "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"}) {
    CAPTURE(fields);
    client c(server.port());
    REQUIRE(c.send("POST / HTTP/1.1\r\nHost: x\r\n" + fields + "\r\nhello"));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 400);
    CHECK(r->header("Connection") == "close");
    CHECK(c.wait_closed());
  }
  CHECK(calls == 0);
}

TEST_CASE("http server: two different Content-Length fields are rejected with 400") {
  std::atomic<int> calls{0};
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request, respond_fn respond) {
    ++calls;
    respond(text("{}"));
  };
  http_server server(test_options(), hooks);
  client c(server.port());
  REQUIRE(c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status == 400);
  CHECK(c.wait_closed());
  CHECK(calls == 0);
}

TEST_CASE("http server: a slowloris header is cut off at the header deadline") {
  std::atomic<int> calls{0};
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request, respond_fn respond) {
    ++calls;
    respond(text("{}"));
  };
  auto options = test_options();
  options.header_deadline = 300ms;
  http_server server(options, hooks);
  client c(server.port());
  std::string request = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + std::string(100, 'a') + "\r\n\r\n";
  auto t0 = steady::now();
  bool closed = false;
  for (char ch : request) {
    if (!c.send(std::string_view(&ch, 1)) || c.closed_now()) {
      closed = true;
      break;
    }
    if (ms_since(t0) > 3000)
      break;
    std::this_thread::sleep_for(100ms);
  }
  auto elapsed = ms_since(t0);
  CHECK(closed);
  CHECK(elapsed < 1500);
  CHECK(calls == 0);
}

TEST_CASE("http server: idle keep-alive connections close after idle_timeout, long polls survive") {
  std::vector<std::thread> workers;
  joiner join_workers{workers};
  std::mutex m;
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request req, respond_fn respond) {
    if (req.target != "/long-poll") {
      respond(text("{}"));
      return;
    }
    std::lock_guard lk(m);
    workers.emplace_back([respond] {
      std::this_thread::sleep_for(600ms); // longer than both timeouts below
      respond(text("polled"));
    });
  };
  auto options = test_options();
  options.header_deadline = 200ms;
  options.idle_timeout = 200ms;
  http_server server(options, hooks);
  client c(server.port());

  // An outstanding response is not idleness: the connection must stay open
  // while the handler takes longer than header_deadline and idle_timeout.
  REQUIRE(c.send(get("/long-poll")));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->body == "polled");

  // Nothing outstanding: closed after idle_timeout.
  auto t0 = steady::now();
  CHECK(c.wait_closed(1500ms));
  CHECK(ms_since(t0) >= 100);
}

TEST_CASE("http server: the idle time counts from the last request, not from the first") {
  auto hooks = test_hooks();
  hooks.on_request = [](http_request, respond_fn respond) { respond(text("{}")); };
  auto options = test_options();
  options.header_deadline = 1000ms;
  options.idle_timeout = 1000ms;
  http_server server(options, hooks);
  client c(server.port());
  // Requests 300 ms apart for longer than idle_timeout: the timer armed
  // before the first one fires in between and must find the connection in
  // use (wide margins: only a 300 ms sleep stretched past 1 s would fail).
  for (int i = 0; i < 6; ++i) {
    REQUIRE(c.send(get("/")));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 200);
    std::this_thread::sleep_for(300ms);
  }
  // Then idle: closed, but not before a good part of idle_timeout.
  auto t0 = steady::now();
  CHECK(c.wait_closed(5000ms));
  CHECK(ms_since(t0) >= 400);
}

TEST_CASE("http server: Expect: 100-continue gets an interim response") {
  auto hooks = test_hooks();
  hooks.on_request = [](http_request req, respond_fn respond) { respond(text(req.body)); };
  http_server server(test_options(), hooks);
  client c(server.port());
  REQUIRE(c.send("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  auto interim = c.read_response(1000ms);
  REQUIRE(interim);
  CHECK(interim->status == 100);
  REQUIRE(c.send("hello"));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "hello");
}

TEST_CASE("http server: a handler that drops respond yields 500") {
  auto hooks = test_hooks();
  hooks.on_request = [](http_request, respond_fn) {};
  http_server server(test_options(), hooks);
  client c(server.port());
  REQUIRE(c.send(get("/dropped")));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status == 500);
  CHECK(r->header("x-amzn-RequestId"));
}

TEST_CASE("http server: stop() closes an idle keep-alive connection promptly") {
  auto hooks = test_hooks();
  hooks.on_request = [](http_request, respond_fn respond) { respond(text("{}")); };
  http_server server(test_options(), hooks);
  client c(server.port());
  REQUIRE(c.send(get("/")));
  REQUIRE(c.read_response());

  auto t0 = steady::now();
  server.stop(5000ms);
  CHECK(ms_since(t0) < 2000);
  CHECK(c.wait_closed(1000ms));
  server.stop(); // idempotent
}

TEST_CASE("http server: stop() finishes in-flight requests and ignores late responds") {
  held_requests held;
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request req, respond_fn respond) { held.add(std::move(req), std::move(respond)); };
  auto server = std::make_unique<http_server>(test_options(), hooks);
  client a(server->port()), b(server->port()), d(server->port());
  REQUIRE(a.send(get("/a")));
  REQUIRE(held.wait_for(1));
  REQUIRE(b.send(get("/b")));
  REQUIRE(held.wait_for(2));
  REQUIRE(d.send(get("/d")));
  REQUIRE(held.wait_for(3));

  auto t0 = steady::now();
  std::vector<std::thread> stopper;
  joiner join_stopper{stopper};
  stopper.emplace_back([&] { server->stop(600ms); });
  std::this_thread::sleep_for(100ms);
  held.take(0).second(text("/a")); // in flight: still delivered during the grace
  auto ra = a.read_response();
  REQUIRE(ra);
  CHECK(ra->body == "/a");
  CHECK(ra->header("Connection") == "close");
  CHECK(a.wait_closed());

  stopper[0].join();
  CHECK(ms_since(t0) < 2000);
  CHECK(b.wait_closed());

  held.take(1).second(text("/b")); // after stop: dropped, no crash
  server.reset();
  held.take(2).second(text("/d")); // after destruction: dropped, no crash
  CHECK(d.wait_closed());
}

TEST_CASE("http server: binding a port in use throws std::system_error") {
  auto hooks = test_hooks();
  hooks.on_request = [](http_request, respond_fn respond) { respond(text("{}")); };
  http_server first(test_options(), hooks);
  auto options = test_options();
  options.port = first.port();
  // SO_REUSEADDR does not allow two listeners on one port.
  CHECK_THROWS_AS(http_server(options, hooks), std::system_error);
}

// -- shared io threads (io_runner) ---------------------------------------------

TEST_CASE("http server: servers on one io_runner share it, and one stops without the other") {
  auto runner = io_runner::start(1);
  auto make = [&](std::string name) {
    auto hooks = test_hooks();
    hooks.on_request = [name](http_request, respond_fn respond) { respond(text(name)); };
    auto o = test_options();
    o.runner = runner;
    return std::make_unique<http_server>(o, hooks);
  };
  auto a = make("a");
  auto b = make("b");
  REQUIRE(a->port() != b->port());
  client ca(a->port());
  client cb(b->port());
  REQUIRE(ca.send(get("/x")));
  REQUIRE(cb.send(get("/x")));
  auto ra = ca.read_response();
  auto rb = cb.read_response();
  REQUIRE(ra);
  REQUIRE(rb);
  CHECK(ra->body == "a");
  CHECK(rb->body == "b");
  // Stopping one closes its connections at once (they are idle) and leaves
  // the shared threads serving the other.
  auto t0 = steady::now();
  a->stop(2000ms);
  CHECK(ms_since(t0) < 1500);
  CHECK(ca.wait_closed());
  REQUIRE(cb.send(get("/y")));
  rb = cb.read_response();
  REQUIRE(rb);
  CHECK(rb->body == "b");
  a.reset();
  b.reset();
}

TEST_CASE("io runner: a held request answered after its server stopped is dropped safely") {
  auto runner = io_runner::start(1);
  held_requests held;
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request req, respond_fn respond) {
    held.add(std::move(req), std::move(respond));
  };
  auto o = test_options();
  o.runner = runner;
  auto server = std::make_unique<http_server>(o, hooks);
  client c(server->port());
  REQUIRE(c.send(get("/long-poll")));
  REQUIRE(held.wait_for(1));
  server->stop(100ms);
  server.reset();
  // The respond function outlives the server; calling it must do nothing.
  held.take(0).second(text("late"));
  CHECK(c.wait_closed());
}

TEST_CASE("io runner: fd_watch calls back while readable and closes its descriptor") {
  auto runner = io_runner::start(1);
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
  std::mutex m;
  std::condition_variable cv;
  std::string got;
  bool eof = false;
  int calls = 0;
  {
    fd_watch watch(runner, p[0], [&] {
      char buf[64];
      auto n = ::read(p[0], buf, sizeof buf);
      std::lock_guard lk(m);
      ++calls;
      if (n > 0)
        got.append(buf, static_cast<size_t>(n));
      if (n == 0)
        eof = true;
      cv.notify_all();
      return n != 0; // stop at end of file
    });
    REQUIRE(::write(p[1], "one", 3) == 3);
    {
      std::unique_lock lk(m);
      REQUIRE(cv.wait_for(lk, 2s, [&] { return got == "one"; }));
    }
    REQUIRE(::write(p[1], "two", 3) == 3);
    {
      std::unique_lock lk(m);
      REQUIRE(cv.wait_for(lk, 2s, [&] { return got == "onetwo"; }));
    }
    ::close(p[1]);
    std::unique_lock lk(m);
    REQUIRE(cv.wait_for(lk, 2s, [&] { return eof; }));
  }
  // The watch owned the read end: it is closed once the io thread got to it.
  auto deadline = steady::now() + 2s;
  while (::fcntl(p[0], F_GETFD) >= 0 && steady::now() < deadline)
    std::this_thread::sleep_for(1ms);
  CHECK(::fcntl(p[0], F_GETFD) == -1);
  std::lock_guard lk(m);
  CHECK(calls >= 3);
}

TEST_CASE("io runner: a stopped fd_watch never calls back") {
  auto runner = io_runner::start(1);
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
  std::atomic<int> calls{0};
  // The watch owns (and closes) the descriptor it is given: hand it a
  // duplicate, so the pipe keeps a reader of ours and the write below can not
  // raise SIGPIPE once the watch closed its end.
  int watched = ::fcntl(p[0], F_DUPFD_CLOEXEC, 0);
  REQUIRE(watched >= 0);
  auto watch = std::make_unique<fd_watch>(runner, watched, [&] {
    ++calls;
    return true;
  });
  watch->stop();
  REQUIRE(::write(p[1], "x", 1) == 1);
  std::this_thread::sleep_for(50ms);
  CHECK(calls.load() == 0);
  watch.reset();
  ::close(p[0]);
  ::close(p[1]);
}

// --- spooled request bodies ---------------------------------------------------

namespace {

/// A private temporary directory, removed with everything in it.
class temp_dir {
public:
  temp_dir() {
    char tmpl[] = "/tmp/nimbus-spool-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
  }
  ~temp_dir() {
    for (const auto& name : entries())
      ::unlink((path_ + "/" + name).c_str());
    ::rmdir(path_.c_str());
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::string& path() const { return path_; }

  /// Names in the directory (without "." and "..").
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    DIR* d = ::opendir(path_.c_str());
    if (!d)
      return out;
    while (auto* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..")
        out.push_back(name);
    }
    ::closedir(d);
    return out;
  }

private:
  std::string path_;
};

/// Polls `pred` until it holds or `timeout` passes.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 10'000ms) {
  auto deadline = steady::now() + timeout;
  while (!pred()) {
    if (steady::now() > deadline)
      return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

/// A field of /proc/self/status in KiB ("VmRSS", "VmHWM"), or -1.
long status_kib(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, field.size() + 1, field + ":") == 0)
      return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  return -1;
}

bool file_exists(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0;
}

/// Options that spool every PUT under /upload/ into `dir` as body-<request id>.
http_server_options spool_options(const temp_dir& dir) {
  auto o = test_options();
  o.body_deadline = 60'000ms;
  o.spool_path = [path = dir.path()](const http_request& head) -> std::string {
    if (head.method != "PUT" || head.path().rfind("/upload/", 0) != 0)
      return {};
    return path + "/body-" + head.request_id;
  };
  return o;
}

/// Deterministic body bytes: piece `i` of a 1 MiB pattern.
std::string pattern_mib() {
  std::string piece(1 << 20, '\0');
  for (size_t i = 0; i < piece.size(); ++i)
    piece[i] = static_cast<char>((i * 131 + i / 4093) & 0xff);
  return piece;
}

} // namespace

TEST_CASE("http server: a 64 MiB upload is spooled to disk with bounded memory and removed after the response") {
  temp_dir dir;
  const std::string piece = pattern_mib();
  constexpr size_t pieces = 64;
  nimbus::storage::sha256_stream expected_hash;
  for (size_t i = 0; i < pieces; ++i)
    expected_hash.update(piece);
  const std::string expected_hex = nimbus::storage::to_hex(expected_hash.finish());

  std::mutex m;
  std::optional<http_request> seen;
  bool file_there_in_handler = false;
  long rss_in_handler = -1;
  auto hooks = test_hooks(); // in-memory limit 1000 bytes: the spool limit must apply instead
  hooks.on_request = [&](http_request req, respond_fn respond) {
    {
      std::lock_guard lk(m);
      rss_in_handler = status_kib("VmRSS");
      struct stat st{};
      file_there_in_handler = ::stat(req.body_file.c_str(), &st) == 0
                              && static_cast<uint64_t>(st.st_size) == req.body_file_size
                              && (st.st_mode & 0777) == 0600;
      seen = req;
    }
    respond(text("{}"));
  };
  http_server server(spool_options(dir), hooks);

  // Peak RSS from here on: reset the high-water mark (Linux >= 4.0).
  bool hwm_reset = false;
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    hwm_reset = std::fputs("5", f) >= 0;
    hwm_reset = (std::fclose(f) == 0) && hwm_reset;
  }
  const long rss_before = status_kib("VmRSS");
  REQUIRE(rss_before > 0);

  client c(server.port());
  REQUIRE(c.send("PUT /upload/app:v1 HTTP/1.1\r\nHost: x\r\nContent-Length: "
                 + std::to_string(pieces * piece.size()) + "\r\n\r\n"));
  for (size_t i = 0; i < pieces; ++i)
    REQUIRE(c.send(piece));
  auto r = c.read_response(30'000ms);
  REQUIRE(r);
  CHECK(r->status == 200);

  std::string body_file;
  {
    std::lock_guard lk(m);
    REQUIRE(seen);
    CHECK(seen->body.empty());
    CHECK(seen->spooled());
    CHECK(seen->body_file_size == pieces * piece.size());
    CHECK(seen->body_sha256_hex == expected_hex);
    CHECK(seen->body_file.rfind(dir.path() + "/body-", 0) == 0);
    CHECK(file_there_in_handler);
    // The body was never held in memory: 64 MiB would show in RSS.
    CHECK_MESSAGE(rss_in_handler - rss_before < 24 * 1024,
                  "rss before " << rss_before << " KiB, in handler " << rss_in_handler << " KiB");
    body_file = seen->body_file;
  }
  if (hwm_reset) {
    const long hwm = status_kib("VmHWM");
    CHECK_MESSAGE(hwm - rss_before < 32 * 1024, "peak rss " << hwm << " KiB, before " << rss_before << " KiB");
  } else {
    MESSAGE("skipped the peak-RSS check: /proc/self/clear_refs is not writable");
  }
  CHECK(eventually([&] { return !file_exists(body_file); }));
  CHECK(dir.entries().empty());

  // The connection stays usable, and requests the hook declines are read
  // into memory as before.
  REQUIRE(c.send("PUT /other HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"));
  auto r2 = c.read_response();
  REQUIRE(r2);
  CHECK(r2->status == 200);
  std::lock_guard lk(m);
  CHECK(seen->body == "hello");
  CHECK_FALSE(seen->spooled());
  CHECK(seen->body_sha256_hex.empty());
}

TEST_CASE("http server: a dropped upload leaves no spool file and never reaches the handler") {
  temp_dir dir;
  std::atomic<int> calls{0};
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request, respond_fn respond) {
    ++calls;
    respond(text("{}"));
  };
  http_server server(spool_options(dir), hooks);
  {
    client c(server.port());
    REQUIRE(c.send("PUT /upload/a:b HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n"));
    REQUIRE(c.send(std::string(1 << 20, 'x')));
    // The file exists while the body streams in...
    REQUIRE(eventually([&] { return dir.entries().size() == 1; }));
  } // ...and the client goes away mid-body.
  CHECK(eventually([&] { return dir.entries().empty(); }));
  CHECK(calls == 0);

  // Same for a chunked body cut off mid-chunk.
  {
    client c(server.port());
    REQUIRE(c.send("PUT /upload/a:b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n"));
    REQUIRE(c.send(std::string(4096, 'y')));
    REQUIRE(eventually([&] { return dir.entries().size() == 1; }));
  }
  CHECK(eventually([&] { return dir.entries().empty(); }));
  CHECK(calls == 0);
}

TEST_CASE("http server: spooled bodies over max_spool_bytes are refused and removed") {
  temp_dir dir;
  std::atomic<int> calls{0};
  std::atomic<uint64_t> seen_limit{0};
  auto hooks = test_hooks();
  auto too_large = hooks.too_large;
  hooks.too_large = [&, too_large](const http_request& head, uint64_t limit) {
    seen_limit = limit;
    return too_large(head, limit);
  };
  hooks.on_request = [&](http_request, respond_fn respond) {
    ++calls;
    respond(text("{}"));
  };
  auto options = spool_options(dir);
  options.max_spool_bytes = 100'000;
  http_server server(options, hooks);

  // Declared too large: refused from the head, no file is created.
  {
    client c(server.port());
    REQUIRE(c.send("PUT /upload/a:b HTTP/1.1\r\nHost: x\r\nContent-Length: 100001\r\n\r\n"));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 413);
    CHECK(seen_limit == 100'000);
    CHECK(dir.entries().empty());
  }
  // A chunked body that grows past the limit: the partial file goes.
  {
    client c(server.port());
    std::string chunk(60'000, 'z');
    REQUIRE(c.send("PUT /upload/a:b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nEA60\r\n" + chunk
                   + "\r\nEA60\r\n" + chunk + "\r\n0\r\n\r\n"));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 413);
    CHECK(c.wait_closed());
  }
  CHECK(eventually([&] { return dir.entries().empty(); }));
  // Exactly the limit is fine.
  {
    client c(server.port());
    REQUIRE(c.send("PUT /upload/a:b HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                   + std::string(100'000, 'q')));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  CHECK(calls == 1);
  CHECK(eventually([&] { return dir.entries().empty(); }));
}

TEST_CASE("http server: a handler may keep the spool file, and holds it until it responds") {
  temp_dir dir;
  held_requests held;
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request req, respond_fn respond) { held.add(std::move(req), std::move(respond)); };
  http_server server(spool_options(dir), hooks);

  // 1. The handler renames the body away before responding: it stays.
  {
    client c(server.port());
    REQUIRE(c.send("PUT /upload/a:b HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"));
    REQUIRE(held.wait_for(1));
    auto [req, respond] = held.take(0);
    CHECK(req.body_sha256_hex == nimbus::storage::to_hex(nimbus::storage::sha256("hello world")));
    const std::string kept = dir.path() + "/kept";
    REQUIRE(::rename(req.body_file.c_str(), kept.c_str()) == 0);
    respond(text("{}"));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 200);
    std::ifstream in(kept);
    std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(content == "hello world");
    ::unlink(kept.c_str());
  }
  // 2. The client goes away while the handler works: the file stays until
  //    the handler responds (it may still be reading it), then goes.
  {
    std::string body_file;
    respond_fn respond;
    {
      client c(server.port());
      REQUIRE(c.send("PUT /upload/a:b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"));
      REQUIRE(held.wait_for(2));
      auto item = held.take(1);
      body_file = item.first.body_file;
      respond = item.second;
    }
    // Give the server time to notice the close; the file must survive it.
    std::this_thread::sleep_for(100ms);
    CHECK(file_exists(body_file));
    respond(text("{}"));
    CHECK(eventually([&] { return !file_exists(body_file); }));
  }
  // 3. An empty body is spooled too (an empty file), and a handler that
  //    drops respond still gets the file removed.
  {
    client c(server.port());
    REQUIRE(c.send("PUT /upload/a:b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
    REQUIRE(held.wait_for(3));
    auto item = held.take(2);
    CHECK(item.first.body_file_size == 0);
    CHECK(item.first.body_sha256_hex == nimbus::storage::to_hex(nimbus::storage::sha256("")));
    CHECK(file_exists(item.first.body_file));
    {
      std::lock_guard lk(held.m);
      held.items.clear(); // drops every respond function: the server answers 500
    }
    item = {};
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 500);
  }
  CHECK(eventually([&] { return dir.entries().empty(); }));
}

TEST_CASE("http server: an existing file at the spool path is never touched") {
  temp_dir dir;
  std::atomic<int> calls{0};
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request, respond_fn respond) {
    ++calls;
    respond(text("{}"));
  };
  auto options = test_options();
  const std::string taken = dir.path() + "/taken";
  {
    std::ofstream out(taken);
    out << "precious";
  }
  options.spool_path = [taken](const http_request&) { return taken; };
  http_server server(options, hooks);
  client c(server.port());
  REQUIRE(c.send("PUT /upload/a:b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"));
  auto r = c.read_response();
  REQUIRE(r);
  CHECK(r->status == 500);
  CHECK(calls == 0);
  std::ifstream in(taken);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(content == "precious");
}

TEST_CASE("http server: a spooled body that misses the body deadline is removed") {
  temp_dir dir;
  std::atomic<int> calls{0};
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request, respond_fn respond) {
    ++calls;
    respond(text("{}"));
  };
  auto options = spool_options(dir);
  options.body_deadline = 300ms;
  http_server server(options, hooks);
  client c(server.port());
  REQUIRE(c.send("PUT /upload/a:b HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + std::string(10, 'x')));
  REQUIRE(eventually([&] { return dir.entries().size() == 1; }));
  // The client stalls; the server gives up on the body and drops the file.
  CHECK(c.wait_closed(10'000ms));
  CHECK(eventually([&] { return dir.entries().empty(); }));
  CHECK(calls == 0);
}

// -- sharded io threads --------------------------------------------------------

namespace {

/// What a handler posted to one shard saw about its thread.
struct shard_view {
  int shard = -2;
  std::vector<int> cpus;
  std::thread::id thread;
};

std::vector<int> my_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (::sched_getaffinity(0, sizeof set, &set) == 0)
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
      if (CPU_ISSET(cpu, &set))
        cpus.push_back(cpu);
  return cpus;
}

shard_view look_at(io_runner& runner, size_t shard) {
  std::promise<shard_view> seen;
  auto got = seen.get_future();
  boost::asio::post(runner.context(shard), [&] {
    seen.set_value(shard_view{runner.current_shard(), my_cpus(), std::this_thread::get_id()});
  });
  REQUIRE(got.wait_for(5s) == std::future_status::ready);
  return got.get();
}

} // namespace

TEST_CASE("io runner: a sharded runner runs each shard on its own thread, pinned to its own CPU") {
  auto allowed = my_cpus();
  REQUIRE_FALSE(allowed.empty());
  auto runner = io_runner::start_sharded(2, true);
  REQUIRE(runner->shards() == 2);
  CHECK(runner->current_shard() == -1); // not one of its threads
  auto a = look_at(*runner, 0);
  auto b = look_at(*runner, 1);
  CHECK(a.shard == 0);
  CHECK(b.shard == 1);
  CHECK(a.thread != b.thread);
  // Shard i is bound to the i-th CPU this process may use (wrapping).
  CHECK(runner->cpu(0) == allowed[0]);
  CHECK(runner->cpu(1) == allowed[1 % allowed.size()]);
  CHECK(a.cpus == std::vector<int>{runner->cpu(0)});
  CHECK(b.cpus == std::vector<int>{runner->cpu(1)});
  // context() and cpu() take the shard modulo the count.
  CHECK(&runner->context(2) == &runner->context(0));
  CHECK(runner->cpu(3) == runner->cpu(1));
  // Two shards cover the CPUs only on a machine with at most two.
  CHECK(runner->covers_cpus() == (allowed.size() <= 2));
  // next_shard() goes round.
  std::set<size_t> seen;
  for (int i = 0; i < 4; ++i)
    seen.insert(runner->next_shard());
  CHECK(seen == std::set<size_t>{0, 1});
}

TEST_CASE("io runner: 0 threads means one per CPU") {
  auto allowed = my_cpus();
  auto sharded = io_runner::start_sharded(0, true);
  CHECK(sharded->shards() == allowed.size());
  CHECK(sharded->covers_cpus());
  for (size_t i = 0; i < allowed.size(); ++i)
    CHECK(sharded->cpu(i) == allowed[i]);
  // A shared loop: one shard, as many threads as CPUs (each is shard 0).
  auto shared = io_runner::start(0);
  CHECK(shared->shards() == 1);
  CHECK_FALSE(shared->covers_cpus());
  CHECK(look_at(*shared, 0).shard == 0);
}

TEST_CASE("io runner: unpinned shards and shared threads keep the process's CPUs") {
  auto allowed = my_cpus();
  auto sharded = io_runner::start_sharded(2, false);
  CHECK_FALSE(sharded->covers_cpus());
  CHECK(sharded->cpu(0) == -1);
  CHECK(sharded->cpu(1) == -1);
  CHECK(look_at(*sharded, 1).cpus == allowed);
  auto shared = io_runner::start(2);
  REQUIRE(shared->shards() == 1);
  CHECK(shared->cpu(0) == -1);
  // Only the shared loop runs an io_context on several threads (the HTTP
  // server gives its sessions strands there, and only there).
  CHECK(sharded->threads_per_context() == 1);
  CHECK(shared->threads_per_context() == 2);
  CHECK(io_runner::start(1)->threads_per_context() == 1);
  auto v = look_at(*shared, 0);
  CHECK(v.shard == 0);
  CHECK(v.cpus == allowed);
  // A thread of one runner is no shard of another.
  std::promise<int> other;
  boost::asio::post(shared->context(), [&] { other.set_value(sharded->current_shard()); });
  auto f = other.get_future();
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  CHECK(f.get() == -1);
}

namespace {

int thread_nice() {
  errno = 0;
  return ::getpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)));
}

int nice_on(io_runner& runner, size_t shard) {
  std::promise<int> p;
  boost::asio::post(runner.context(shard), [&] { p.set_value(thread_nice()); });
  auto f = p.get_future();
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  return f.get();
}

} // namespace

TEST_CASE("io runner: io threads run at the nice value they are given, the caller keeps its own") {
  int own = thread_nice();
  REQUIRE(own < 17);
  auto inherit = io_runner::start_sharded(1, false);
  CHECK(inherit->nice_error() == 0);
  CHECK(nice_on(*inherit, 0) == own);
  // Raising the value needs no privilege.
  auto sharded = io_runner::start_sharded(2, false, own + 2);
  CHECK(sharded->nice_error() == 0);
  CHECK(nice_on(*sharded, 0) == own + 2);
  CHECK(nice_on(*sharded, 1) == own + 2);
  auto shared = io_runner::start(2, own + 1);
  CHECK(shared->nice_error() == 0);
  CHECK(nice_on(*shared, 0) == own + 1);
  CHECK(thread_nice() == own);
  if (::geteuid() != 0)
    return;
  // Root may lower it, as nimbusd does for its io threads.
  auto eager = io_runner::start_sharded(1, false, -5);
  CHECK(eager->nice_error() == 0);
  CHECK(nice_on(*eager, 0) == -5);
  CHECK(thread_nice() == own);
  // Without the privilege the threads keep their starter's value, and
  // nice_error() says why (checked in a child that gives up root).
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0)
      ::_exit(10);
    int mine = thread_nice();
    auto refused = io_runner::start_sharded(1, false, mine - 1);
    if (refused->nice_error() != EACCES && refused->nice_error() != EPERM)
      ::_exit(11);
    std::promise<int> p;
    boost::asio::post(refused->context(0), [&] { p.set_value(thread_nice()); });
    ::_exit(p.get_future().get() == mine ? 0 : 12);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("http server: on a sharded runner connections are spread over the shards, or all on one") {
  auto runner = io_runner::start_sharded(2, false);
  std::mutex m;
  std::vector<int> shards;
  auto hooks = test_hooks();
  hooks.on_request = [&](http_request req, respond_fn respond) {
    // The request carries the shard whose thread received it.
    auto here = runner->current_shard();
    {
      std::lock_guard lk(m);
      shards.push_back(req.shard);
    }
    respond(text(std::to_string(req.shard) + "/" + std::to_string(here)));
  };
  auto run_clients = [&](http_server& server) {
    std::vector<std::unique_ptr<client>> clients;
    for (int i = 0; i < 4; ++i)
      clients.push_back(std::make_unique<client>(server.port()));
    for (auto& c : clients) {
      REQUIRE(c->send(get("/x")));
      auto r = c->read_response();
      REQUIRE(r);
      // Received and handled on the same shard.
      auto slash = r->body.find('/');
      REQUIRE(slash != std::string::npos);
      CHECK(r->body.substr(0, slash) == r->body.substr(slash + 1));
    }
  };
  {
    auto o = test_options();
    o.runner = runner;
    http_server spread(o, hooks);
    run_clients(spread);
    std::lock_guard lk(m);
    REQUIRE(shards.size() == 4);
    CHECK(std::count(shards.begin(), shards.end(), 0) == 2);
    CHECK(std::count(shards.begin(), shards.end(), 1) == 2);
    shards.clear();
  }
  {
    auto o = test_options();
    o.runner = runner;
    o.shard = 1;
    http_server one(o, hooks);
    run_clients(one);
    std::lock_guard lk(m);
    CHECK(shards == std::vector<int>{1, 1, 1, 1});
    shards.clear();
  }
  {
    // A server with threads of its own knows no shards.
    auto o = test_options();
    http_server own(o, hooks);
    client c(own.port());
    REQUIRE(c.send(get("/x")));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->body == "-1/-1");
  }
}
