#include "nimbus/transport/runtime_api.hpp"

#include "nimbus/storage/json.hpp"

#include <charconv>
#include <string_view>

namespace nimbus::transport {

namespace {

constexpr std::string_view prefix = "/2018-06-01/runtime/";

// The answer to every accepted /response, /error and /init/error: small
// enough to need no allocation (the server adds the JSON Content-Type).
http_response accepted() {
  http_response res;
  res.status = 202;
  res.body = R"({"status":"OK"})";
  return res;
}

http_response runtime_error(int status, std::string_view type, std::string_view message) {
  storage::json_writer w;
  w.begin_object().key("errorMessage").value(message).key("errorType").value(type).end_object();
  http_response res;
  res.status = status;
  res.body = w.take();
  res.set_header("Content-Type", "application/json");
  return res;
}

// Splits "invocation/{id}/response" into id and action.
bool parse_invocation_path(std::string_view rest, std::string& id, std::string& action) {
  constexpr std::string_view inv = "invocation/";
  if (rest.substr(0, inv.size()) != inv)
    return false;
  rest.remove_prefix(inv.size());
  auto slash = rest.find('/');
  if (slash == std::string_view::npos || slash == 0)
    return false;
  id = std::string{rest.substr(0, slash)};
  action = std::string{rest.substr(slash + 1)};
  return true;
}

// The error type of an /error post: the header if given, else the body's
// errorType (aws-lambda-ric sends no header), else Unhandled.
std::string error_type_of(const http_request& req) {
  if (auto h = req.header("Lambda-Runtime-Function-Error-Type"); h && !h->empty())
    return std::string{*h};
  auto pos = req.body.find("\"errorType\"");
  if (pos != std::string::npos) {
    auto colon = req.body.find(':', pos);
    auto open = req.body.find('"', colon == std::string::npos ? pos : colon);
    auto close = open == std::string::npos ? open : req.body.find('"', open + 1);
    if (open != std::string::npos && close != std::string::npos && close - open < 200)
      return req.body.substr(open + 1, close - open - 1);
  }
  return "Unhandled";
}

} // namespace

runtime_api::runtime_api(runtime_api_callbacks callbacks) : callbacks_(std::move(callbacks)) {
}

http_response runtime_api::next_response(runtime_invocation& inv) const {
  http_response res;
  res.body = std::move(inv.payload); // the event is handed out once
  // One string for the fields (this answers every invocation). A value that
  // could split the response is left out, as the server does with headers.
  auto& lines = res.header_lines;
  lines.reserve(192 + inv.request_id.size() + inv.invoked_function_arn.size()
                + inv.trace_id.size() + inv.client_context.size());
  // aws-lambda-ric crashes without a Content-Type and exits without the id.
  res.add_header_line("Content-Type", "application/json");
  res.add_header_line("Lambda-Runtime-Aws-Request-Id", inv.request_id);
  char deadline[24];
  auto end = std::to_chars(deadline, deadline + sizeof deadline, inv.deadline_ms).ptr;
  res.add_header_line("Lambda-Runtime-Deadline-Ms", std::string_view(deadline, end - deadline));
  res.add_header_line("Lambda-Runtime-Invoked-Function-Arn", inv.invoked_function_arn);
  res.add_header_line("Lambda-Runtime-Trace-Id", inv.trace_id);
  if (!inv.client_context.empty())
    res.add_header_line("Lambda-Runtime-Client-Context", inv.client_context);
  return res;
}

void runtime_api::submit(runtime_invocation inv) {
  std::optional<respond_fn> waiting;
  http_response res;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    current_id_ = inv.request_id;
    if (waiting_next_) {
      waiting = std::move(waiting_next_);
      waiting_next_.reset();
      res = next_response(inv);
    } else {
      queued_ = std::move(inv);
    }
  }
  if (waiting)
    (*waiting)(std::move(res));
}

void runtime_api::handle(http_request req, respond_fn respond) {
  std::string_view path = req.path();
  if (path.substr(0, prefix.size()) != prefix) {
    respond(runtime_error(404, "InvalidPath", "Unknown path"));
    return;
  }
  auto rest = path.substr(prefix.size());
  if (rest == "invocation/next") {
    if (req.method != "GET") {
      respond(runtime_error(405, "MethodNotAllowed", "Use GET"));
      return;
    }
    bool first = false;
    std::optional<http_response> now;
    {
      std::lock_guard<std::mutex> guard{mutex_};
      first = !ready_;
      ready_ = true;
      if (queued_) {
        now = next_response(*queued_);
        queued_.reset();
      } else {
        // A runtime that asks twice keeps only its latest call waiting.
        waiting_next_ = std::move(respond);
      }
    }
    if (first && callbacks_.on_ready)
      callbacks_.on_ready();
    if (now)
      respond(std::move(*now));
    return;
  }
  if (rest == "init/error") {
    if (req.method != "POST") {
      respond(runtime_error(405, "MethodNotAllowed", "Use POST"));
      return;
    }
    respond(accepted());
    if (callbacks_.on_init_error)
      callbacks_.on_init_error(error_type_of(req), std::move(req.body));
    return;
  }
  std::string id, action;
  if (!parse_invocation_path(rest, id, action) || req.method != "POST"
      || (action != "response" && action != "error")) {
    respond(runtime_error(404, "InvalidPath", "Unknown path"));
    return;
  }
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (id != current_id_ || current_id_.empty()) {
      respond(runtime_error(400, "InvalidRequestID", "Invalid request ID"));
      return;
    }
    current_id_.clear();
  }
  respond(accepted());
  if (action == "response") {
    if (callbacks_.on_response)
      callbacks_.on_response(id, std::move(req.body));
  } else if (callbacks_.on_error) {
    auto type = error_type_of(req);
    callbacks_.on_error(id, std::move(type), std::move(req.body));
  }
}

uint64_t runtime_api::body_limit(const http_request& head) const {
  std::string_view path = head.path();
  // Init errors and error reports are small; responses may be up to 6 MB.
  if (path.size() > 9 && path.substr(path.size() - 9) == "/response")
    return runtime_max_response_bytes;
  return 1024 * 1024;
}

http_response runtime_api::too_large(const http_request& head, uint64_t limit) {
  std::string_view path = head.path();
  std::string id, action;
  bool ours = false;
  if (path.substr(0, prefix.size()) == prefix
      && parse_invocation_path(path.substr(prefix.size()), id, action)) {
    std::lock_guard<std::mutex> guard{mutex_};
    ours = !id.empty() && id == current_id_;
    if (ours)
      current_id_.clear();
  }
  auto message = "Response payload size exceeded maximum allowed payload size ("
                 + std::to_string(limit) + " bytes).";
  if (ours && callbacks_.on_error) {
    storage::json_writer w;
    w.begin_object()
      .key("errorMessage")
      .value(message)
      .key("errorType")
      .value("Function.ResponseSizeTooLarge")
      .end_object();
    callbacks_.on_error(id, "Function.ResponseSizeTooLarge", w.take());
  }
  return runtime_error(413, "RequestEntityTooLarge", message);
}

http_server_hooks runtime_api::hooks(std::shared_ptr<runtime_api> api) {
  // The hooks share ownership: on shared io threads a connection may still
  // be handled for a moment after its server stopped.
  http_server_hooks h;
  h.on_request = [api](http_request req, respond_fn respond) {
    api->handle(std::move(req), std::move(respond));
  };
  h.body_limit = [api](const http_request& head) { return api->body_limit(head); };
  h.too_large = [api](const http_request& head, uint64_t limit) {
    return api->too_large(head, limit);
  };
  h.bad_request = [](std::string_view reason, int status) {
    return runtime_error(status, "InvalidRequest", reason);
  };
  return h;
}

} // namespace nimbus::transport
