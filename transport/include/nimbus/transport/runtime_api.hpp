#pragma once

/// The server side of the Lambda Runtime API for one execution environment
/// (LAMBDA-API.md B.10), as a request handler for the HTTP server that
/// listens on 127.0.0.1:9001 inside the environment's network namespace.
///
/// The runtime long-polls GET /runtime/invocation/next; the owner submits one
/// invocation at a time and hears, through callbacks, when the runtime first
/// asked for work (INIT is over), answered, reported an error, or reported an
/// init error. /next and /response may arrive on different connections, and
/// /next may wait indefinitely. Thread-safe: HTTP callbacks arrive on io
/// threads, submit() on the owner's.

#include "nimbus/transport/http_server.hpp"
#include "nimbus/transport/http_types.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace nimbus::transport {

/// Largest response a runtime may post (RIE: 6 MiB plus 100 bytes).
inline constexpr uint64_t runtime_max_response_bytes = 6 * 1024 * 1024 + 100;

/// One event handed to the runtime.
struct runtime_invocation {
  std::string request_id;
  std::string payload;
  /// Unix time in milliseconds when the invocation times out.
  int64_t deadline_ms = 0;
  std::string invoked_function_arn;
  std::string trace_id;
  /// Base64-decoded X-Amz-Client-Context JSON, empty if none.
  std::string client_context;
};

/// What the runtime did.
struct runtime_api_callbacks {
  /// The runtime asked for its first event: INIT is complete.
  std::function<void()> on_ready;
  /// The runtime answered invocation `request_id` with `body`.
  std::function<void(const std::string& request_id, std::string body)> on_response;
  /// The runtime reported a function error (`error_type`, JSON `body`); a
  /// response over the size limit is reported here too, as
  /// Function.ResponseSizeTooLarge.
  std::function<void(const std::string& request_id, std::string error_type, std::string body)>
    on_error;
  /// The runtime reported that it could not initialize.
  std::function<void(std::string error_type, std::string body)> on_init_error;
};

/// Runtime API state of one environment.
class runtime_api {
public:
  explicit runtime_api(runtime_api_callbacks callbacks);

  /// Handles one request from the runtime.
  void handle(http_request req, respond_fn respond);

  /// Decides the body limit of a request (hook for the HTTP server).
  uint64_t body_limit(const http_request& head) const;

  /// Answers a response that is over the limit, and reports it (hook for the
  /// HTTP server).
  http_response too_large(const http_request& head, uint64_t limit);

  /// Hands an invocation to the runtime: at once if it is waiting in /next,
  /// else on its next /next. Only one invocation may be outstanding.
  void submit(runtime_invocation inv);

  /// Builds the hooks that connect an http_server to `api` (they keep it
  /// alive).
  static http_server_hooks hooks(std::shared_ptr<runtime_api> api);

private:
  http_response next_response(runtime_invocation& inv) const;
  runtime_api_callbacks callbacks_;
  std::mutex mutex_;
  std::optional<respond_fn> waiting_next_;
  std::optional<runtime_invocation> queued_;
  std::string current_id_;
  bool ready_ = false;
};

} // namespace nimbus::transport
