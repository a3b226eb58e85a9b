#pragma once

/// The HTTP/1.1 server (Boost.Beast) that carries the Lambda API. It runs on
/// its own io threads and hands each complete request to a callback; the
/// callback answers later, from any thread, through the `respond` function it
/// was given, so handing a request to an actor never blocks an io thread.
///
/// Shape follows Beast's advanced server example: a listener, one session per
/// connection, do_x/on_x pairs, a request parser per message with header and
/// body limits, a total deadline for reading the header block, and a bounded
/// queue of pipelined requests whose responses go out in request order.
///
/// Large uploads (image pushes) are not held in memory: the `spool_path`
/// option names a file for a request from its head alone, and the body is
/// streamed into it while its SHA-256 is computed (see http_request::body_file).

#include "nimbus/transport/http_types.hpp"
#include "nimbus/transport/io_runner.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace nimbus::transport {

/// Answers one request; call exactly once, from any thread.
using respond_fn = std::function<void(http_response)>;

/// Handles one complete request. Must not block.
using request_handler = std::function<void(http_request, respond_fn)>;

/// Tunables of the HTTP server.
struct http_server_options {
  /// Address to bind, e.g. "127.0.0.1".
  std::string address = "127.0.0.1";
  /// Port to bind; 0 lets the kernel choose (see http_server::port()).
  uint16_t port = 9000;
  /// An IPv4 socket that is already bound and listening; when set (>= 0) the
  /// server adopts it (and owns it) instead of binding address:port.
  int listen_fd = -1;
  /// Number of io threads.
  size_t io_threads = 2;
  /// Shared io threads to run on instead of starting `io_threads` of its
  /// own (the Runtime APIs of all environments of a worker share one).
  std::shared_ptr<io_runner> runner;
  /// With a sharded runner: the shard that accepts and serves every
  /// connection (taken modulo the runner's shards); -1 accepts on shard 0
  /// and spreads connections over all shards in turn.
  int shard = -1;
  /// Maximum size of the request line plus all header fields.
  uint32_t max_header_bytes = 16 * 1024;
  /// Total time allowed to receive the complete header block of a request
  /// (counted from the first byte, or from the end of the previous response on
  /// a keep-alive connection).
  std::chrono::milliseconds header_deadline{10'000};
  /// Total time allowed to receive the body once the header block is in.
  std::chrono::milliseconds body_deadline{120'000};
  /// Time an idle keep-alive connection is kept open.
  std::chrono::milliseconds idle_timeout{60'000};
  /// Maximum number of requests read ahead of their responses on one
  /// connection (HTTP pipelining).
  size_t max_pipeline = 8;
  /// Gives every request an id (http_request::request_id), sent back as
  /// x-amzn-RequestId. A server whose peers have no use for it (the Runtime
  /// API) turns this off and saves making one per request.
  bool request_ids = true;
  /// Decides from a request's head (method, target, headers; the body is
  /// still unread) whether its body is spooled to a file: returns the path of
  /// a file to create (it must not exist: it is created O_EXCL, mode 0600), or
  /// an empty string to read the body into memory as usual. The handler then
  /// gets `body_file`, `body_sha256_hex` and `body_file_size` and an empty
  /// `body`. The file is removed when reading fails (disconnect, deadline,
  /// over `max_spool_bytes`) and after the response is sent; a handler that
  /// keeps the body renames the file away before it responds.
  std::function<std::string(const http_request& head)> spool_path;
  /// Body limit for spooled requests (the body_limit hook applies to the
  /// others).
  uint64_t max_spool_bytes = uint64_t{10} << 30;
};

/// Hooks through which the owner decides limits and error bodies.
struct http_server_hooks {
  /// Handles complete requests.
  request_handler on_request;
  /// Returns the maximum body size for a request, decided from its method,
  /// target and headers only (the body field is still empty).
  std::function<uint64_t(const http_request& head)> body_limit;
  /// Builds the response for a request whose declared Content-Length exceeds
  /// `limit`. The body is not read and the connection is closed afterwards.
  std::function<http_response(const http_request& head, uint64_t limit)> too_large;
  /// Builds the response for a request the parser rejected (malformed,
  /// header block too large, smuggling shapes such as two Content-Length
  /// fields or Content-Length with Transfer-Encoding). `reason` says why.
  std::function<http_response(std::string_view reason, int status)> bad_request;
};

/// A running HTTP server.
class http_server {
public:
  /// Binds and starts serving on `options.io_threads` threads. Throws
  /// std::system_error when the address cannot be bound.
  http_server(http_server_options options, http_server_hooks hooks);

  /// Stops (see stop()).
  ~http_server();

  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// The bound port.
  uint16_t port() const;

  /// Stops accepting, lets in-flight requests finish for up to `grace`, then
  /// closes all connections and joins the io threads. Idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds{5000});

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace nimbus::transport
