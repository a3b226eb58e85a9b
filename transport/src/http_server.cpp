#include "nimbus/transport/http_server.hpp"

#include "nimbus/storage/digest.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

// Connection lifecycle, in short (see session below for the details):
//
//  * Waiting for a request: a one-shot read of at least one byte with no
//    stream deadline, plus an idle timer that is armed only while nothing is
//    outstanding on the connection. The first request of a connection gets
//    `header_deadline` counted from accept; later requests on a keep-alive
//    connection get `idle_timeout`. The wait is split off the header read so
//    that a long-polling request (GET /runtime/invocation/next) can stay
//    outstanding while we listen for pipelined requests: a deadline on that
//    speculative read would close the socket under the long poll.
//  * Header block: `header_deadline` in total, counted from accept for the
//    first request and from the first byte for later ones. It is a single
//    expiry on the stream, never pushed forward per byte, so a slowloris that
//    trickles bytes is cut off at the deadline. On a header timeout the
//    tcp_stream has already closed the socket, so no 408 is sent: we close
//    quietly.
//  * Body: `body_deadline` in total. Writes: `body_deadline` per response.
//  * Errors we answer (too large, malformed, smuggling shapes) go out in
//    request order after earlier pipelined responses, carry
//    `Connection: close`, and are followed by a short lingering close so the
//    peer can read them even when it is still sending a body.
//  * Spooled bodies: once the head is in and the `spool_path` option names a
//    file, the string-body parser is converted into a parser whose body
//    writes each received piece to that file and into a running SHA-256, so
//    memory stays bounded by the read buffer whatever the body size. The file
//    belongs to a spool_file object: while reading, the session holds it (any
//    read failure drops it, which removes the file); at dispatch it moves into
//    the request's responder, then with the response into its pipeline slot,
//    and is removed when that slot is written or discarded.

namespace nimbus::transport {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

// A session's types name its executor instead of the type-erased
// net::any_io_executor: copying that wrapper allocates, which every async
// operation and handler of the session did a few times. On an io_context run
// by one thread (a shard of a sharded io_runner) the handlers of a session
// cannot overlap, and its executor is the io_context's own; where several
// threads run the io_context it is a strand, which serializes them at the
// cost of a queue and a lock per handler (about 4% of the node's CPU on the
// warm invoke path).
using plain_executor = net::io_context::executor_type;
using strand_executor = net::strand<net::io_context::executor_type>;
template <class Executor>
using session_socket = net::basic_stream_socket<tcp, Executor>;
template <class Executor>
using session_stream = beast::basic_stream<tcp, Executor>;
template <class Executor>
using session_timer =
    net::basic_waitable_timer<std::chrono::steady_clock,
                              net::wait_traits<std::chrono::steady_clock>, Executor>;
using steady = std::chrono::steady_clock;

/// How long we keep draining a peer's input after answering with an error and
/// shutting down our side, so the kernel does not reset the connection (and
/// destroy our response) because of unread request bytes.
constexpr std::chrono::milliseconds linger_time{1000};

/// The first read of a request takes at most this much: a whole head and a
/// small body in one recv().
constexpr std::size_t first_read_bytes = 16384;

/// Bounded wait for sessions to act on a forced close before io threads stop.
constexpr std::chrono::milliseconds force_close_wait{500};

/// Body limit used when the owner installed no body_limit hook.
constexpr uint64_t default_body_limit = 6 * 1024 * 1024;

constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";

/// RFC 7231 IMF-fixdate. Formatted by hand because strftime's %a/%b follow
/// the process locale; formatted once per second per thread (every response
/// carries it).
const std::string& http_date(std::chrono::system_clock::time_point tp) {
  static constexpr std::array<const char*, 7> days{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr std::array<const char*, 12> months{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  thread_local std::time_t cached_second = -1;
  thread_local std::string cached;
  std::time_t t = std::chrono::system_clock::to_time_t(tp);
  if (t == cached_second)
    return cached;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
                months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  cached = buf;
  cached_second = t;
  return cached;
}

std::string format_endpoint(const tcp::endpoint& ep) {
  auto addr = ep.address();
  std::string ip = addr.to_string();
  if (addr.is_v6())
    ip = "[" + ip + "]";
  return ip + ":" + std::to_string(ep.port());
}


bool contains_token(std::string_view list, std::string_view token) {
  for (auto t : http::token_list{beast::string_view{list.data(), list.size()}})
    if (iequals(std::string_view{t.data(), t.size()}, token))
      return true;
  return false;
}

std::string json_message(std::string_view text) {
  std::string out = R"({"message":")";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  out += "\"}";
  return out;
}

bool is_http_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

/// True for errors that mean the request bytes were malformed, as opposed to
/// the peer going away mid-message.
bool is_parse_error(const beast::error_code& ec) {
  return is_http_error(ec) && ec != http::error::end_of_stream && ec != http::error::partial_message &&
         ec != http::error::need_more && ec != http::error::need_buffer;
}

/// A spooled request body on disk. Removes its file when destroyed; a handler
/// that keeps the body renames the file away first (removing a missing file
/// is fine).
class spool_file {
public:
  /// Creates `path` exclusively with mode 0600; nothing (and `error` set) if
  /// it cannot be created. An existing file is never touched.
  static std::unique_ptr<spool_file> create(const std::string& path, std::string& error) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      error = std::string("cannot create the spool file: ") + std::strerror(errno);
      return nullptr;
    }
    return std::unique_ptr<spool_file>(new spool_file(path, fd));
  }

  ~spool_file() {
    close_fd();
    ::unlink(path_.c_str());
  }

  spool_file(const spool_file&) = delete;
  spool_file& operator=(const spool_file&) = delete;

  /// Appends to the file and the hash; false (and failed()) on a write error.
  bool write(const char* data, size_t n) {
    if (fd_ < 0 || failed_)
      return false;
    hash_.update(std::string_view{data, n});
    size_ += n;
    while (n > 0) {
      ssize_t w = ::write(fd_, data, n);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0) {
        failed_ = true;
        return false;
      }
      data += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }

  /// Closes the file and returns the hex SHA-256 of everything written.
  std::string finish() {
    close_fd();
    return storage::to_hex(hash_.finish());
  }

  bool failed() const { return failed_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

private:
  spool_file(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  void close_fd() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }

  std::string path_;
  int fd_ = -1;
  storage::sha256_stream hash_;
  uint64_t size_ = 0;
  bool failed_ = false;
};

/// Beast's HTTP/1 request parser, feeding an http_request directly: the
/// request line and each field go into it as they are parsed, and the body
/// into its string or, once spool_to() names a file, into that file. (Beast's
/// message type would allocate a node per field that we would then copy.)
class request_reader final : public http::basic_parser<true> {
public:
  explicit request_reader(http_request& target) : req_(&target) {}

  /// The body goes to `file` from now on (set before any body byte is parsed).
  void spool_to(spool_file* file) { spool_ = file; }

  /// HTTP minor+major version (11 for 1.1), once the request line is in.
  unsigned version() const { return version_; }
  /// The method, once the request line is in.
  http::verb method() const { return method_; }

private:
  void on_request_impl(http::verb method, beast::string_view method_str, beast::string_view target,
                       int version, beast::error_code&) override {
    method_ = method;
    version_ = static_cast<unsigned>(version);
    req_->method.assign(method_str.data(), method_str.size());
    req_->target.assign(target.data(), target.size());
  }

  void on_response_impl(int, beast::string_view, int, beast::error_code& ec) override {
    ec = http::error::bad_version; // requests only; never called for them
  }

  void on_field_impl(http::field, beast::string_view name, beast::string_view value,
                     beast::error_code&) override {
    req_->headers.emplace_back(std::string(name.data(), name.size()),
                               std::string(value.data(), value.size()));
  }

  void on_header_impl(beast::error_code&) override {}

  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                         beast::error_code&) override {
    // The session has checked the declared length against its limit.
    if (!spool_ && content_length)
      req_->body.reserve(static_cast<size_t>(*content_length));
  }

  std::size_t on_body_impl(beast::string_view body, beast::error_code& ec) override {
    if (spool_) {
      if (!spool_->write(body.data(), body.size())) {
        ec = beast::error_code(EIO, boost::system::system_category());
        return 0;
      }
      return body.size();
    }
    req_->body.append(body.data(), body.size());
    return body.size();
  }

  void on_chunk_header_impl(std::uint64_t, beast::string_view, beast::error_code&) override {}

  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body,
                                 beast::error_code& ec) override {
    return on_body_impl(body, ec);
  }

  void on_finish_impl(beast::error_code&) override {}

  http_request* req_;
  spool_file* spool_ = nullptr;
  unsigned version_ = 11;
  http::verb method_ = http::verb::unknown;
};

/// What the server and respond functions need of a session, whatever its
/// executor type. The post_* functions run the call on the session's
/// executor and keep the session alive until then.
class session_base {
public:
  virtual ~session_base() = default;
  virtual void post_response(uint64_t seq, http_response r, std::shared_ptr<spool_file> spool) = 0;
  virtual void post_stop_soft() = 0;
  virtual void post_stop_hard() = 0;
  virtual void post_abandon() = 0;
  /// Only when no io thread runs any more.
  virtual void abandon() = 0;
};

/// State shared by the server, its sessions and every outstanding respond
/// function. Respond functions may outlive the server, so they hold this by
/// shared_ptr and never the io_context directly.
struct server_state {
  server_state(http_server_options o, http_server_hooks h) : options(std::move(o)), hooks(std::move(h)) {}

  const http_server_options options;
  const http_server_hooks hooks;

  /// Guards `accepting_responses`. While it is true the io_context is alive
  /// and running, so a respond call may post onto it; stop() clears it before
  /// the io_context stops.
  std::mutex respond_mutex;
  bool accepting_responses = true;

  /// Live sessions, so stop() can reach them. Guarded by sessions_mutex.
  std::mutex sessions_mutex;
  std::condition_variable sessions_cv;
  std::unordered_map<const session_base*, std::weak_ptr<session_base>> sessions;
  bool stopping = false;

  /// Registers a session; refuses when the server is stopping, which closes
  /// the race between accept and stop().
  bool add_session(const std::shared_ptr<session_base>& s) {
    std::lock_guard lk(sessions_mutex);
    if (stopping)
      return false;
    sessions.emplace(s.get(), s);
    return true;
  }

  void remove_session(const session_base* s) {
    {
      std::lock_guard lk(sessions_mutex);
      sessions.erase(s);
    }
    sessions_cv.notify_all();
  }

  std::vector<std::shared_ptr<session_base>> live_sessions() {
    std::vector<std::shared_ptr<session_base>> out;
    std::lock_guard lk(sessions_mutex);
    for (auto& [key, weak] : sessions)
      if (auto s = weak.lock())
        out.push_back(std::move(s));
    return out;
  }

  /// Waits until every session is gone or `deadline` passes.
  bool wait_no_sessions(steady::time_point deadline) {
    std::unique_lock lk(sessions_mutex);
    return sessions_cv.wait_until(lk, deadline, [&] { return sessions.empty(); });
  }

  size_t max_pipeline() const { return std::max<size_t>(1, options.max_pipeline); }

  /// The spool file path for a request, or empty (also when the hook fails).
  std::string call_spool_path(const http_request& head) const {
    if (!options.spool_path)
      return {};
    try {
      return options.spool_path(head);
    } catch (...) {
      return {};
    }
  }

  uint64_t call_body_limit(const http_request& head) const {
    if (!hooks.body_limit)
      return default_body_limit;
    try {
      return hooks.body_limit(head);
    } catch (...) {
      return 0; // a failing hook must not open the door to unbounded bodies
    }
  }

  http_response call_too_large(const http_request& head, uint64_t limit) const {
    if (hooks.too_large) {
      try {
        return hooks.too_large(head, limit);
      } catch (...) {
      }
    }
    http_response r;
    r.status = 413;
    r.body = json_message("Request must be smaller than " + std::to_string(limit) + " bytes");
    return r;
  }

  http_response call_bad_request(std::string_view reason, int status) const {
    if (hooks.bad_request) {
      try {
        return hooks.bad_request(reason, status);
      } catch (...) {
      }
    }
    http_response r;
    r.status = status;
    r.body = json_message(reason);
    return r;
  }
};

/// One connection. All members are touched only on the session's executor
/// (a strand, or the io_context of a single io thread), except `executor_`
/// (immutable) which respond functions read to post.
template <class Executor>
class session final : public session_base, public std::enable_shared_from_this<session<Executor>> {
public:
  session(session_socket<Executor>&& socket, std::shared_ptr<server_state> state)
      : stream_(std::move(socket)), executor_(stream_.get_executor()), idle_timer_(executor_),
        state_(std::move(state)), accepted_at_(steady::now()) {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec)
      remote_ = format_endpoint(ep);
  }

  ~session() { state_->remove_session(this); }

  session(const session&) = delete;
  session& operator=(const session&) = delete;

  /// Called once by the listener (not on our executor).
  void start() {
    // The session keeps itself alive while open: requests awaiting a handler
    // may have no io operation pending, and respond functions hold only a
    // weak_ptr (a response for a closed connection is dropped).
    self_ = this->shared_from_this();
    if (!state_->add_session(self_)) {
      self_.reset();
      beast::error_code ec;
      stream_.socket().close(ec);
      return;
    }
    net::dispatch(executor_,
                  beast::bind_front_handler(&session::on_start, this->shared_from_this()));
  }

  void post_response(uint64_t seq, http_response r, std::shared_ptr<spool_file> spool) override {
    net::post(executor_, [s = this->shared_from_this(), seq, r = std::move(r),
                          spool = std::move(spool)]() mutable {
      s->on_response(seq, std::move(r), std::move(spool));
    });
  }
  void post_stop_soft() override {
    net::post(executor_, [s = this->shared_from_this()] { s->stop_soft(); });
  }
  void post_stop_hard() override {
    net::post(executor_, [s = this->shared_from_this()] { s->stop_hard(); });
  }
  void post_abandon() override {
    net::post(executor_, [s = this->shared_from_this()] { s->abandon(); });
  }

  /// stop(): stop reading new requests, finish what is in flight, and close
  /// right away if the connection is idle.
  void stop_soft() {
    stopping_ = true;
    if (closed_)
      return;
    if (queue_.empty() && !writing_ && !in_request())
      close_now();
  }

  /// stop() after the grace period: close now.
  void stop_hard() { close_now(); }

  /// Called from stop() once the io threads have been joined, so nothing runs
  /// concurrently: breaks the self reference so the session can be freed.
  void abandon() override {
    close_now();
  }

  /// A handler's response for the request with sequence number `seq`;
  /// `spool` (if any) is the request's body file, kept until the response is
  /// written.
  void on_response(uint64_t seq, http_response r, std::shared_ptr<spool_file> spool) {
    if (closed_ || seq < head_seq_)
      return;
    uint64_t idx = seq - head_seq_;
    if (idx >= queue_.size())
      return;
    slot& s = queue_[idx];
    if (s.response)
      return;
    s.spool = std::move(spool);
    accept_response(r, s);
    s.response = std::move(r);
    do_write();
  }

private:
  enum class read_state { idle, waiting, header, body };

  /// One request whose response has not been written yet; filled out of order,
  /// written strictly from the front.
  struct slot {
    unsigned version = 11;
    bool keep_alive = false;
    bool head_method = false;
    bool close = false; // close after writing (error path or handler asked)
    std::string request_id;
    /// The handler's response, framed when it is written (see do_write).
    std::optional<http_response> response;
    /// The request's spooled body, removed when the slot goes.
    std::shared_ptr<spool_file> spool;
  };

  bool in_request() const { return read_state_ == read_state::header || read_state_ == read_state::body; }

  void on_start() {
    if (closed_)
      return; // stop() got here first
    if (stopping_) {
      close_now();
      return;
    }
    // Reads and writes are tried right away and fall back to the reactor
    // only when the socket is not ready (see do_read and do_write).
    beast::error_code ec;
    stream_.socket().non_blocking(true, ec);
    if (ec) {
      close_now();
      return;
    }
    do_read();
  }

  // --- reading -------------------------------------------------------------

  void do_read() {
    if (closed_ || stopping_ || read_closed_ || read_state_ != read_state::idle ||
        queue_.size() >= state_->max_pipeline())
      return;
    if (buffer_.size() > 0) {
      // Bytes of the next (pipelined) request are already here.
      do_read_header();
      return;
    }
    read_state_ = read_state::waiting;
    // No stream deadline while waiting (see the comment at the top); the idle
    // timer bounds the wait whenever nothing else is outstanding.
    stream_.expires_never();
    update_idle_timer();
    // The read is tried at once, so right after a response it usually
    // fails with EAGAIN first. Waiting for readability instead costs the
    // same (asio re-arms the descriptor with epoll_ctl), so keep it simple.
    stream_.async_read_some(
        buffer_.prepare(first_read_bytes),
        beast::bind_front_handler(&session::on_first_bytes, this->shared_from_this()));
  }

  void on_first_bytes(beast::error_code ec, std::size_t n) {
    read_state_ = read_state::idle;
    if (closed_)
      return;
    update_idle_timer();
    if (ec) {
      // Peer closed or reset, or the idle timer closed us: nothing to answer.
      read_closed_ = true;
      finish_if_done();
      return;
    }
    buffer_.commit(n);
    if (stopping_) {
      read_closed_ = true; // no new requests once stop() began
      finish_if_done();
      return;
    }
    do_read_header();
  }

  void do_read_header() {
    read_state_ = read_state::header;
    update_idle_timer();
    head_ = http_request{};
    head_.headers.reserve(8);
    parser_.emplace(head_);
    parser_->header_limit(state_->options.max_header_bytes);
    // Beast 1.74 compares Content-Length against an unset (boost::none)
    // limit as "exceeded", so disable the check with the largest value; the
    // real limit is applied once the head is in and the hook has spoken.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    if (buffer_.size() > 0) {
      // Usually the whole head came with the first bytes: parse it here,
      // without an asynchronous operation, its deadline timer and a post.
      beast::error_code ec;
      auto used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec != http::error::need_more) {
        on_header(ec, used);
        return;
      }
    }
    // One expiry for the whole header block: a total deadline, not per byte.
    if (first_request_)
      stream_.expires_at(accepted_at_ + state_->options.header_deadline);
    else
      stream_.expires_after(state_->options.header_deadline);
    http::async_read_header(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&session::on_header, this->shared_from_this()));
  }

  void on_header(beast::error_code ec, std::size_t) {
    read_state_ = read_state::idle;
    if (closed_)
      return;
    if (ec) {
      on_read_error(ec);
      return;
    }
    first_request_ = false;
    try {
      // The reader has filled head_ with the request line and the fields.
      auto& head = head_;
      unsigned version = parser_->version();
      head.remote = remote_;
      if (state_->options.request_ids)
        head.request_id = storage::request_uuid();

      // Request smuggling shapes. Beast rejects some orders of these fields
      // itself, but not e.g. "Transfer-Encoding: gzip" before Content-Length,
      // and a Transfer-Encoding without final chunked leaves the body length
      // undefined for a request.
      bool has_cl = head.header("Content-Length").has_value();
      bool has_te = head.header("Transfer-Encoding").has_value();
      if (has_cl && has_te) {
        reject(state_->call_bad_request("Content-Length together with Transfer-Encoding", 400),
               version, head.request_id);
        return;
      }
      if (has_te && !parser_->chunked()) {
        reject(state_->call_bad_request("Unsupported Transfer-Encoding", 400), version, head.request_id);
        return;
      }

      std::string spool_path = state_->call_spool_path(head);
      body_limit_ = spool_path.empty() ? state_->call_body_limit(head) : state_->options.max_spool_bytes;
      auto declared = parser_->content_length();
      if (declared && *declared > body_limit_) {
        // Decided from the header alone: the body is never read.
        reject(state_->call_too_large(head, body_limit_), version, head.request_id);
        return;
      }
      if (!spool_path.empty()) {
        std::string error;
        spool_ = spool_file::create(spool_path, error);
        if (!spool_) {
          reject(state_->call_bad_request("The request body could not be stored", 500), version,
                 head.request_id);
          return;
        }
      }
      if (parser_->is_done()) {
        dispatch();
        return;
      }
      // Switch to the streaming body before any body byte is parsed.
      if (spool_)
        parser_->spool_to(spool_.get());
      parser_->body_limit(body_limit_);
      do_read_body();
    } catch (...) {
      close_now();
    }
  }

  /// HTTP minor+major version of the request being read (11 for 1.1).
  unsigned request_version() const {
    return parser_ ? parser_->version() : 11;
  }

  /// Drops the parser(s) of the request being read, and its spool file with
  /// them.
  void drop_request() {
    parser_.reset();
    spool_.reset();
  }

  /// Feeds buffered bytes to `p`; true if that finished the body or failed
  /// (`ec` says which), false if more bytes must be read.
  template <class Parser>
  bool parse_buffered_body(Parser& p, beast::error_code& ec) {
    while (buffer_.size() > 0 && !p.is_done()) {
      auto used = p.put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec == http::error::need_more) {
        ec = {};
        return false;
      }
      if (ec)
        return true;
      if (used == 0)
        return false;
    }
    return p.is_done();
  }

  void read_body_now() {
    // A small body usually arrived with the head: finish it here.
    beast::error_code ec;
    if (parse_buffered_body(*parser_, ec)) {
      on_body(ec, 0);
      return;
    }
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&session::on_body, this->shared_from_this()));
  }

  void do_read_body() {
    read_state_ = read_state::body;
    stream_.expires_after(state_->options.body_deadline);
    auto expect = head_.header("Expect");
    if (expect && iequals(*expect, "100-continue") && request_version() >= 11 && !writing_ &&
        queue_.empty()) {
      // Clients that ask first (curl for large bodies) would otherwise pause
      // before sending. Only when the write side is free: otherwise they
      // simply send after their own timeout.
      writing_ = true;
      net::async_write(stream_, net::buffer(continue_line.data(), continue_line.size()),
                       beast::bind_front_handler(&session::on_continue, this->shared_from_this()));
      return;
    }
    read_body_now();
  }

  void on_continue(beast::error_code ec, std::size_t) {
    writing_ = false;
    if (closed_)
      return;
    if (ec) {
      close_now();
      return;
    }
    read_body_now();
  }

  void on_body(beast::error_code ec, std::size_t) {
    read_state_ = read_state::idle;
    if (closed_)
      return;
    if (ec == http::error::body_limit) {
      // A chunked body (or one without a declared length) grew past the limit.
      try {
        reject(state_->call_too_large(head_, body_limit_), request_version(), head_.request_id);
      } catch (...) {
        close_now();
      }
      return;
    }
    if (ec && spool_ && spool_->failed()) {
      // The disk refused the body (e.g. full): say so instead of hanging up.
      try {
        reject(state_->call_bad_request("The request body could not be stored", 500), request_version(),
               head_.request_id);
      } catch (...) {
        close_now();
      }
      return;
    }
    if (ec) {
      on_read_error(ec);
      return;
    }
    try {
      dispatch();
    } catch (...) {
      close_now();
    }
  }

  void on_read_error(const beast::error_code& ec) {
    if (is_parse_error(ec)) {
      unsigned version = request_version();
      if (version != 10 && version != 11)
        version = 11;
      int status = ec == http::error::header_limit ? 431 : 400;
      try {
        reject(state_->call_bad_request(ec.message(), status), version, {});
      } catch (...) {
        close_now();
      }
      return;
    }
    // The peer went away, the deadline passed (the stream has closed the
    // socket already), or we closed: close quietly.
    drop_request();
    read_closed_ = true;
    if (ec == beast::error::timeout) {
      close_now();
      return;
    }
    finish_if_done();
  }

  /// Hands a complete request to the handler and keeps reading ahead.
  void dispatch() {
    slot s;
    std::shared_ptr<spool_file> spool;
    s.version = parser_->version();
    s.keep_alive = parser_->keep_alive();
    s.head_method = parser_->method() == http::verb::head;
    parser_.reset();
    if (spool_) {
      head_.body_sha256_hex = spool_->finish();
      head_.body_file = spool_->path();
      head_.body_file_size = spool_->size();
      spool = std::move(spool_);
    }
    s.request_id = head_.request_id;
    if (!s.keep_alive)
      read_closed_ = true; // the peer sends nothing more after this one
    queue_.push_back(std::move(s));
    uint64_t seq = next_seq_++;

    http_request request = std::move(head_);
    head_ = http_request{};
    if (state_->options.runner)
      request.shard = state_->options.runner->current_shard();
    respond_fn respond = make_respond(seq, std::move(spool));
    try {
      if (state_->hooks.on_request)
        state_->hooks.on_request(std::move(request), std::move(respond));
    } catch (...) {
      // If the handler dropped `respond`, its guard answers 500.
    }
    do_read();
  }

  /// Queues a server-generated error response (in request order) and stops
  /// reading: the connection closes after it is written.
  void reject(http_response r, unsigned version, std::string request_id) {
    drop_request();
    read_closed_ = true;
    slot s;
    s.version = version;
    s.keep_alive = false;
    s.close = true;
    s.request_id = request_id.empty() ? storage::request_uuid() : std::move(request_id);
    accept_response(r, s);
    s.response = std::move(r);
    queue_.push_back(std::move(s));
    ++next_seq_;
    do_write();
  }

  respond_fn make_respond(uint64_t seq, std::shared_ptr<spool_file> spool);

  // --- writing -------------------------------------------------------------

  /// Takes a handler's response into its slot: a status that cannot be
  /// final becomes 500, and a `Connection: close` from the handler closes the
  /// connection after it.
  static void accept_response(http_response& r, slot& s) {
    if (r.status < 200 || r.status > 999)
      r.status = 500; // interim (1xx) or invalid codes cannot be final responses
    for (const auto& [name, value] : r.headers)
      if (valid_header_field(name, value) && iequals(name, "Connection") && contains_token(value, "close"))
        s.close = true;
  }

  /// Frames the front slot's response into out_head_ (status line and header
  /// block) and out_body_. The server owns framing (Content-Length,
  /// Connection) and the fields every response carries (x-amzn-RequestId,
  /// Date, Server); a handler's fields of those names, and fields that could
  /// split the response, are dropped. out_head_ keeps its capacity, so a
  /// response costs no allocation here.
  void frame(slot& s, bool close) {
    http_response& r = *s.response;
    auto& h = out_head_;
    h.clear();
    auto append_number = [&h](uint64_t v) {
      char digits[24];
      auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
      h.append(digits, end);
    };
    auto field = [&h](std::string_view name, std::string_view value) {
      h.append(name);
      h += ": ";
      h.append(value);
      h += "\r\n";
    };
    h += "HTTP/";
    h += static_cast<char>('0' + s.version / 10 % 10);
    h += '.';
    h += static_cast<char>('0' + s.version % 10);
    h += ' ';
    append_number(static_cast<uint64_t>(r.status));
    h += ' ';
    auto reason = http::obsolete_reason(http::int_to_status(static_cast<unsigned>(r.status)));
    h.append(reason.data(), reason.size());
    h += "\r\n";
    bool has_type = false;
    for (const auto& [name, value] : r.headers) {
      if (!valid_header_field(name, value))
        continue;
      if (server_owned_field(name))
        continue;
      if (iequals(name, "Content-Type"))
        has_type = true;
      field(name, value);
    }
    h += r.header_lines; // checked when they were added
    if (!has_type && !r.header_lines.empty() && r.header("Content-Type"))
      has_type = true;
    if (!s.request_id.empty())
      field("x-amzn-RequestId", s.request_id);
    field("Date", http_date(std::chrono::system_clock::now()));
    field("Server", "nimbus");
    bool no_body = r.status == 204 || r.status == 304;
    if (no_body)
      r.body.clear();
    if (!has_type && !r.body.empty())
      field("Content-Type", "application/json");
    if (!no_body) {
      h += "Content-Length: ";
      append_number(r.body.size()); // HEAD: the length is advertised, the body not sent
      h += "\r\n";
    }
    // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 closes it
    // unless told otherwise.
    if (s.version >= 11 && close)
      h += "Connection: close\r\n";
    else if (s.version < 11 && !close)
      h += "Connection: keep-alive\r\n";
    h += "\r\n";
    out_body_.clear();
    if (!s.head_method)
      out_body_ = std::move(r.body);
  }

  /// The part of out_head_ + out_body_ not yet written, after `done` bytes.
  std::array<net::const_buffer, 2> unwritten(std::size_t done) const {
    std::array<net::const_buffer, 2> out{net::buffer(out_head_), net::buffer(out_body_)};
    if (done < out_head_.size()) {
      out[0] += done;
    } else {
      out[0] = net::const_buffer{};
      out[1] += done - out_head_.size();
    }
    return out;
  }

  void do_write() {
    if (closed_ || writing_ || queue_.empty() || !queue_.front().response)
      return;
    slot& s = queue_.front();
    bool last = queue_.size() == 1 && !in_request();
    bool close = s.close || !s.keep_alive || (stopping_ && last) || (read_closed_ && last);
    frame(s, close);
    writing_ = true;
    update_idle_timer();
    // Most responses fit the socket buffer: head and body go out in one
    // sendmsg now, and only what the socket does not take asynchronously
    // (with its deadline).
    beast::error_code ec;
    auto n = stream_.socket().write_some(unwritten(0), ec);
    if (ec == net::error::would_block || ec == net::error::try_again) {
      ec = {};
      n = 0;
    }
    if (ec || n == out_head_.size() + out_body_.size()) {
      on_write(close, ec, n);
      return;
    }
    // Sets only the write timer when a read is pending.
    stream_.expires_after(state_->options.body_deadline);
    net::async_write(
        stream_, unwritten(n),
        beast::bind_front_handler(&session::on_write, this->shared_from_this(), close));
  }

  void on_write(bool close, beast::error_code ec, std::size_t) {
    writing_ = false;
    if (closed_)
      return;
    if (ec) {
      close_now();
      return;
    }
    if (out_head_.capacity() > first_read_bytes)
      out_head_ = std::string{}; // an unusually large header block
    out_body_ = std::string{};
    queue_.pop_front();
    ++head_seq_;
    if (close || ((stopping_ || read_closed_) && queue_.empty() && !in_request())) {
      graceful_close();
      return;
    }
    do_write();
    do_read(); // the queue has room again
    update_idle_timer();
  }

  // --- closing -------------------------------------------------------------

  /// Closes once the read side is finished and nothing is left to write.
  void finish_if_done() {
    if (queue_.empty() && !writing_)
      close_now();
  }

  /// Shuts down our side and drains the peer for a moment before closing, so
  /// unread request bytes do not turn into a reset that eats our response.
  void graceful_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec || read_state_ != read_state::idle || stopping_) {
      close_now();
      return;
    }
    closed_ = true;
    queue_.clear();
    update_idle_timer();
    self_.reset(); // the linger read keeps us alive until it ends
    stream_.expires_after(linger_time);
    do_linger();
  }

  void do_linger() {
    stream_.async_read_some(
        net::buffer(linger_buf_),
        beast::bind_front_handler(&session::on_linger, this->shared_from_this()));
  }

  void on_linger(beast::error_code ec, std::size_t) {
    if (ec || !stream_.socket().is_open()) {
      close_now();
      return;
    }
    do_linger();
  }

  void close_now() {
    // The parsers stay: a body read may still be pending on them until the
    // close below cancels it. A spool file goes with the session.
    closed_ = true;
    queue_.clear();
    update_idle_timer();
    stream_.close(); // cancels pending operations; noexcept
    self_.reset();
  }

  // --- idle timer ----------------------------------------------------------

  /// Keeps the idle timer armed while the connection waits for a request
  /// with nothing outstanding. A request arriving does not cancel it (that
  /// would cost every request a cancel, a completion and a re-arm): when it
  /// fires, it checks that the connection has been idle for the whole
  /// timeout, and waits for the rest if not. Closing cancels it.
  void update_idle_timer() {
    bool idle = !closed_ && read_state_ == read_state::waiting && queue_.empty() && !writing_;
    if (!idle) {
      idle_since_valid_ = false;
      if (closed_ && idle_armed_) {
        idle_armed_ = false;
        ++idle_gen_;
        idle_timer_.cancel();
      }
      return;
    }
    if (!idle_since_valid_) {
      idle_since_valid_ = true;
      idle_since_ = steady::now();
    }
    if (!idle_armed_)
      arm_idle_timer(idle_deadline());
  }

  steady::time_point idle_deadline() const {
    return first_request_ ? accepted_at_ + state_->options.header_deadline
                          : idle_since_ + state_->options.idle_timeout;
  }

  void arm_idle_timer(steady::time_point deadline) {
    idle_armed_ = true;
    idle_timer_.expires_at(deadline);
    idle_timer_.async_wait([self = this->shared_from_this(),
                            gen = ++idle_gen_](beast::error_code ec) { self->on_idle(ec, gen); });
  }

  void on_idle(beast::error_code ec, uint64_t gen) {
    // A generation mismatch means the timer was cancelled after it fired.
    if (ec || gen != idle_gen_ || !idle_armed_)
      return;
    idle_armed_ = false;
    bool idle = !closed_ && read_state_ == read_state::waiting && queue_.empty() && !writing_;
    if (!idle)
      return; // busy: armed again once it waits for a request
    auto deadline = idle_deadline();
    if (steady::now() < deadline) {
      arm_idle_timer(deadline); // it was busy for part of the time
      return;
    }
    close_now();
  }

  session_stream<Executor> stream_;
  const Executor executor_;
  session_timer<Executor> idle_timer_;
  std::shared_ptr<server_state> state_;
  std::shared_ptr<session> self_;
  const steady::time_point accepted_at_;
  std::string remote_;

  beast::flat_buffer buffer_;
  /// Parses the request being read into head_.
  std::optional<request_reader> parser_;
  /// The body file of the request being read (spooled requests).
  std::unique_ptr<spool_file> spool_;
  http_request head_;     // the request being read
  uint64_t body_limit_ = 0;

  std::deque<slot> queue_;
  uint64_t head_seq_ = 0; // sequence number of queue_.front()
  uint64_t next_seq_ = 0; // == head_seq_ + queue_.size()
  std::string out_head_; // status line and header block of the response being written
  std::string out_body_; // its body

  read_state read_state_ = read_state::idle;
  bool first_request_ = true;
  bool writing_ = false;
  bool read_closed_ = false; // no further requests will be read
  bool stopping_ = false;
  bool closed_ = false;
  bool idle_armed_ = false;
  uint64_t idle_gen_ = 0;
  /// When the connection last began to wait for a request (if it waits).
  steady::time_point idle_since_;
  bool idle_since_valid_ = false;
  std::array<char, 4096> linger_buf_{};
};

/// The shared core of a respond function. Delivery happens at most once; if
/// every copy is dropped without a call, the request is answered with 500 so
/// the connection does not stall.
class responder {
public:
  responder(std::shared_ptr<server_state> state, std::weak_ptr<session_base> target, uint64_t seq,
            std::shared_ptr<spool_file> spool)
      : state_(std::move(state)), target_(std::move(target)), seq_(seq), spool_(std::move(spool)) {}

  ~responder() {
    if (used_.load())
      return;
    try {
      http_response r;
      r.status = 500;
      r.body = json_message("The request handler did not respond");
      deliver(std::move(r));
    } catch (...) {
    }
  }

  responder(const responder&) = delete;
  responder& operator=(const responder&) = delete;

  void deliver(http_response r) {
    if (used_.exchange(true))
      return;
    // Only this (first) call touches spool_: the handler is done with the
    // body file, which now lives until the response is written, or ends here
    // if it cannot be.
    std::shared_ptr<spool_file> spool = std::move(spool_);
    std::lock_guard lk(state_->respond_mutex);
    if (!state_->accepting_responses)
      return; // the server stopped; its io_context may be gone
    auto s = target_.lock();
    if (!s)
      return; // the connection is gone
    s->post_response(seq_, std::move(r), std::move(spool));
  }

private:
  std::shared_ptr<server_state> state_;
  std::weak_ptr<session_base> target_;
  uint64_t seq_;
  std::shared_ptr<spool_file> spool_;
  std::atomic<bool> used_{false};
};

template <class Executor>
respond_fn session<Executor>::make_respond(uint64_t seq, std::shared_ptr<spool_file> spool) {
  auto r = std::make_shared<responder>(state_, this->weak_from_this(), seq, std::move(spool));
  return [r](http_response res) { r->deliver(std::move(res)); };
}

/// Accepts connections, on the server's own io_context or on a shard of its
/// io_runner (see `pick`); each gets a strand of its own when that io_context
/// may run on several threads (`serialize`).
class listener : public std::enable_shared_from_this<listener> {
public:
  /// `pick` chooses the io_context of each new connection.
  listener(net::io_context& ioc, std::function<net::io_context&()> pick, bool serialize,
           std::shared_ptr<server_state> state)
      : pick_(std::move(pick)), serialize_(serialize), acceptor_(net::make_strand(ioc)),
        retry_timer_(acceptor_.get_executor()), state_(std::move(state)) {
    const auto& o = state_->options;
    beast::error_code ec;
    auto fail = [&](const char* what) {
      throw std::system_error(std::error_code(ec.value(), std::system_category()),
                              std::string("http server: ") + what + " " + o.address + ":" + std::to_string(o.port));
    };
    if (o.listen_fd >= 0) {
      // A socket already bound and listening, e.g. inside a sandbox's network
      // namespace: adopt it instead of binding.
      acceptor_.assign(tcp::v4(), o.listen_fd, ec);
      if (ec)
        fail("adopt the listening socket for");
      port_ = acceptor_.local_endpoint(ec).port();
      if (ec)
        fail("read the bound port of");
      return;
    }
    auto address = net::ip::make_address(o.address, ec);
    if (ec)
      throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                              "http server: bad address " + o.address);
    tcp::endpoint endpoint{address, o.port};
    acceptor_.open(endpoint.protocol(), ec);
    if (ec)
      fail("open");
    acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (ec)
      fail("set SO_REUSEADDR on");
    acceptor_.bind(endpoint, ec);
    if (ec)
      fail("bind");
    acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec)
      fail("listen on");
    port_ = acceptor_.local_endpoint(ec).port();
    if (ec)
      fail("read the bound port of");
  }

  uint16_t port() const { return port_; }

  void start() { net::dispatch(acceptor_.get_executor(), beast::bind_front_handler(&listener::do_accept, shared_from_this())); }

  void stop() {
    net::post(acceptor_.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->acceptor_.close(ec);
      self->retry_timer_.cancel();
    });
  }

private:
  void do_accept() {
    if (!acceptor_.is_open())
      return;
    if (serialize_)
      acceptor_.async_accept(
          net::make_strand(pick_()),
          beast::bind_front_handler(&listener::on_accept<strand_executor>, shared_from_this()));
    else
      acceptor_.async_accept(
          pick_().get_executor(),
          beast::bind_front_handler(&listener::on_accept<plain_executor>, shared_from_this()));
  }

  template <class Executor>
  void on_accept(beast::error_code ec, session_socket<Executor> socket) {
    if (ec == net::error::operation_aborted || !acceptor_.is_open())
      return;
    if (ec) {
      // E.g. out of file descriptors: back off instead of spinning.
      retry_timer_.expires_after(std::chrono::milliseconds(100));
      retry_timer_.async_wait([self = shared_from_this()](beast::error_code wait_ec) {
        if (!wait_ec)
          self->do_accept();
      });
      return;
    }
    // Responses are written whole; waiting for ACKs (Nagle) only adds
    // latency, up to the peer's delayed-ACK timer.
    beast::error_code nodelay_ec;
    socket.set_option(tcp::no_delay(true), nodelay_ec);
    try {
      std::make_shared<session<Executor>>(std::move(socket), state_)->start();
    } catch (...) {
      // The socket (if still owned) closes with the failed session.
    }
    do_accept();
  }

  std::function<net::io_context&()> pick_;
  const bool serialize_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_timer_;
  std::shared_ptr<server_state> state_;
  uint16_t port_ = 0;
};

} // namespace

struct http_server::impl {
  impl(http_server_options options, http_server_hooks hooks)
      : state(std::make_shared<server_state>(std::move(options), std::move(hooks))),
        runner(state->options.runner),
        own_ioc(runner ? nullptr
                       : std::make_unique<net::io_context>(
                           static_cast<int>(std::max<size_t>(1, state->options.io_threads)))),
        ioc(runner ? runner->context(std::max(state->options.shard, 0)) : *own_ioc),
        accept(std::make_shared<listener>(
            ioc, session_context(),
            runner ? runner->threads_per_context() > 1 : state->options.io_threads > 1, state)) {
    accept->start();
    if (runner)
      return;
    work.emplace(net::make_work_guard(ioc));
    size_t n = std::max<size_t>(1, state->options.io_threads);
    threads.reserve(n);
    for (size_t i = 0; i < n; ++i)
      threads.emplace_back([this] {
        for (;;) {
          try {
            ioc.run();
            return;
          } catch (...) {
            // Handlers catch their own errors; this keeps a stray exception
            // from killing the process through the thread boundary.
          }
        }
      });
  }

  // Where new connections go: the server's own io_context, the runner's
  // shard named in the options, or the runner's shards in turn.
  std::function<net::io_context&()> session_context() {
    if (!runner)
      return [&ioc = *own_ioc]() -> net::io_context& { return ioc; };
    // The listener may outlive this impl by a handler: it keeps the runner.
    if (state->options.shard >= 0)
      return [r = runner, shard = size_t(state->options.shard)]() -> net::io_context& {
        return r->context(shard);
      };
    return [r = runner]() -> net::io_context& { return r->context(r->next_shard()); };
  }

  void stop(std::chrono::milliseconds grace) {
    std::lock_guard stop_lock(stop_mutex);
    if (stopped)
      return;
    stopped = true;
    auto deadline = steady::now() + grace;

    // 1. No new connections, and tell every session to wind down: idle ones
    //    close at once, busy ones after their outstanding responses.
    accept->stop();
    {
      std::lock_guard lk(state->sessions_mutex);
      state->stopping = true;
    }
    for (auto& s : state->live_sessions())
      s->post_stop_soft();

    // 2. Grace period for in-flight requests.
    if (!state->wait_no_sessions(deadline)) {
      // 3. Force the rest closed and give the sessions a moment to act.
      for (auto& s : state->live_sessions())
        s->post_stop_hard();
      state->wait_no_sessions(steady::now() + force_close_wait);
    }

    if (runner) {
      // Shared io threads keep running for others: sessions that are still
      // alive close on their io threads; respond calls after this are dropped
      // (the io_context lives on, so posting would be safe, but there is no
      // one left to answer).
      std::lock_guard lk(state->respond_mutex);
      state->accepting_responses = false;
      for (auto& s : state->live_sessions())
        s->post_abandon();
      return;
    }

    // 4. From here on respond calls are dropped, so nothing posts onto an
    //    io_context that is stopped or destroyed.
    {
      std::lock_guard lk(state->respond_mutex);
      state->accepting_responses = false;
    }
    work.reset();
    ioc.stop();
    for (auto& t : threads)
      if (t.joinable())
        t.join();

    // 5. No io thread runs now, so touching sessions directly is safe: break
    //    the self references of any that never processed the forced close.
    for (auto& s : state->live_sessions())
      s->abandon();
  }

  std::mutex stop_mutex;
  bool stopped = false;
  std::shared_ptr<server_state> state;
  /// The shared io threads, or none (then own_ioc and threads are used).
  std::shared_ptr<io_runner> runner;
  std::unique_ptr<net::io_context> own_ioc;
  net::io_context& ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::shared_ptr<listener> accept;
  std::vector<std::thread> threads;
};

http_server::http_server(http_server_options options, http_server_hooks hooks)
    : impl_(std::make_unique<impl>(std::move(options), std::move(hooks))) {}

http_server::~http_server() {
  if (impl_)
    impl_->stop(std::chrono::milliseconds{5000});
}

uint16_t http_server::port() const { return impl_->accept->port(); }

void http_server::stop(std::chrono::milliseconds grace) { impl_->stop(grace); }

} // namespace nimbus::transport
