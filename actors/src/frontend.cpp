#include "nimbus/actors/frontend.hpp"

#include "nimbus/actors/code_builder.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/config/logging.hpp"
#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/json.hpp"
#include "nimbus/transport/lambda_api.hpp"
#include "nimbus/transport/sigv4.hpp"
#include "nimbus/transport/uri.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace nimbus {

using namespace transport;
using namespace transport::lambda;
using storage::function_record;

std::string validate(const frontend_config& cfg) {
  if (cfg.accounts.empty())
    return "frontend: no accounts configured";
  if (!cfg.now)
    return "frontend: clock missing";
  if (!cfg.metrics)
    return "frontend: metrics sink missing";
  return {};
}

namespace {

using self_ptr = frontend_actor::stateful_pointer<frontend_state>;
/// Where a request's answer goes: the CAF response promise of a request
/// message, or the HTTP server's respond function (http_exchange).
class response_promise {
public:
  explicit response_promise(caf::typed_response_promise<http_response> promise)
      : promise_(std::move(promise)) {
  }
  explicit response_promise(std::shared_ptr<std::function<void(http_response)>> respond)
      : respond_(std::move(respond)) {
  }
  void deliver(http_response res) {
    if (respond_) {
      auto respond = std::move(respond_);
      (*respond)(std::move(res));
    } else {
      promise_.deliver(std::move(res));
    }
  }

private:
  caf::typed_response_promise<http_response> promise_;
  std::shared_ptr<std::function<void(http_response)>> respond_;
};

/// How long a GetFunction code link stays valid (as on AWS).
constexpr std::chrono::minutes download_link_lifetime{10};

// Maps an actor error to the AWS error a client sees.
api_error to_api_error(const caf::error& err) {
  if (err.category() == caf::atom("nimbus")) {
    auto msg = error_message(err);
    switch (static_cast<ec>(err.code())) {
      case ec::invalid_parameter: return {400, "InvalidParameterValueException", msg};
      case ec::invalid_request_content: return {400, "InvalidRequestContentException", msg};
      case ec::resource_not_found: return {404, "ResourceNotFoundException", msg};
      case ec::resource_conflict: return {409, "ResourceConflictException", msg};
      case ec::precondition_failed: return {412, "PreconditionFailedException", msg};
      case ec::code_storage_exceeded: return {400, "CodeStorageExceededException", msg};
      case ec::storage_failure:
      case ec::service_failure:
      case ec::init_failed:
      case ec::environment_unavailable:
      case ec::throttled:
      case ec::none: break;
    }
    return {500, "ServiceException", msg};
  }
  if (err == caf::sec::request_timeout)
    return {500, "ServiceException", "The service did not answer in time"};
  return {500, "ServiceException", "Internal service error"};
}

// Completes a request: records metrics and logs failures.
void finish(self_ptr self, response_promise& rp, std::string_view op_name,
            std::chrono::steady_clock::time_point start, http_response res) {
  auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
    std::chrono::steady_clock::now() - start);
  self->state.config.metrics->record(op_name, res.status, elapsed);
  if (res.status >= 500)
    config::logger("actors")->error("frontend answered {} with {}", op_name, res.status);
  rp.deliver(std::move(res));
}

void finish(self_ptr self, response_promise& rp, operation op,
            std::chrono::steady_clock::time_point start, http_response res) {
  finish(self, rp, operation_name(op), start, std::move(res));
}

// The {FunctionName} label resolved against the caller's account and region.
struct resolved_name {
  std::string name;
  std::optional<std::string> qualifier;
  std::optional<api_error> error;
};

resolved_name resolve(const frontend_state& st, const std::string& account,
                      const route& r, size_t max_length) {
  resolved_name out;
  auto ref = parse_function_name(r.function_name, max_length);
  if (!ref) {
    out.error = invalid_parameter("functionName", r.function_name,
                                  "Member must satisfy regular expression pattern: "
                                  "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?"
                                  "(\\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?");
    return out;
  }
  out.name = ref->name;
  out.qualifier = ref->qualifier;
  if (auto q = r.param("Qualifier")) {
    if (out.qualifier && *out.qualifier != *q) {
      out.error = api_error{400, "InvalidParameterValueException",
                            "The derived qualifier from the function name does not match the "
                            "specified qualifier."};
      return out;
    }
    out.qualifier = *q;
  }
  // Another account's or region's ARN never reaches anything: to the caller it
  // is a function that does not exist.
  if ((!ref->account_id.empty() && ref->account_id != account)
      || (!ref->region.empty() && ref->region != st.config.region)) {
    out.error = api_error{404, "ResourceNotFoundException",
                          "Function not found: "
                            + function_arn(ref->region.empty() ? st.config.region : ref->region,
                                           ref->account_id, ref->name)};
    return out;
  }
  return out;
}

std::string download_signature(const frontend_state& st, const std::string& account,
                               const std::string& name, const std::string& hex,
                               const std::string& expires) {
  return storage::to_hex(
    storage::hmac_sha256(st.config.download_key, account + "/" + name + "/" + hex + "/" + expires));
}


std::string code_location(const frontend_state& st, const std::string& host,
                          const function_record& r) {
  auto expires = std::chrono::duration_cast<std::chrono::seconds>(
                   (st.config.now() + download_link_lifetime).time_since_epoch())
                   .count();
  auto exp = std::to_string(expires);
  return "http://" + host + "/nimbus/code/" + r.account_id + "/" + uri_encode(r.name) + "/"
         + r.code_sha256_hex + "?Expires=" + exp
         + "&Signature=" + download_signature(st, r.account_id, r.name, r.code_sha256_hex, exp);
}

api_error auth_failure(const sigv4::verify_result& v) {
  switch (v.error) {
    case sigv4::auth_error::missing_authentication:
      return {403, "MissingAuthenticationTokenException", "Missing Authentication Token"};
    case sigv4::auth_error::malformed:
      return {400, "IncompleteSignatureException", v.message};
    case sigv4::auth_error::unknown_access_key:
      return {403, "UnrecognizedClientException",
              "The security token included in the request is invalid."};
    case sigv4::auth_error::signature_mismatch:
      return {403, "InvalidSignatureException",
              "The request signature we calculated does not match the signature you provided. "
              "Check your AWS Secret Access Key and signing method. Consult the service "
              "documentation for details."};
    case sigv4::auth_error::expired:
    case sigv4::auth_error::wrong_scope:
      return {403, "InvalidSignatureException", v.message};
  }
  return {403, "InvalidSignatureException", v.message};
}

// Asks the registry and renders a record with `render`.
template <class Render, class... Ts>
void ask_registry(self_ptr self, response_promise rp, operation op,
                  std::chrono::steady_clock::time_point start, Render render, Ts&&... xs) {
  self->request(self->state.registry, self->state.config.request_timeout, std::forward<Ts>(xs)...)
    .then(
      [=](function_record& r) mutable { finish(self, rp, op, start, render(r)); },
      [=](caf::error& err) mutable {
        finish(self, rp, op, start, error_response(to_api_error(err)));
      });
}

void observe(std::vector<uint64_t>& histogram, double& sum, uint64_t& count, int64_t micros) {
  const auto& bounds = api_metrics::buckets();
  if (histogram.empty())
    histogram.resize(bounds.size(), 0);
  double seconds = static_cast<double>(micros) / 1e6;
  for (size_t i = 0; i < bounds.size(); ++i)
    if (seconds <= bounds[i]) {
      ++histogram[i];
      break;
    }
  sum += seconds;
  ++count;
}

std::string render_histogram(const std::string& name, const std::vector<uint64_t>& h, double sum,
                             uint64_t count) {
  std::string out = "# TYPE " + name + " histogram\n";
  const auto& bounds = api_metrics::buckets();
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    cumulative += h.empty() ? 0 : h[i];
    char le[32];
    std::snprintf(le, sizeof le, "%g", bounds[i]);
    out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count) + "\n";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6f", sum);
  out += name + "_sum " + buf + "\n" + name + "_count " + std::to_string(count) + "\n";
  return out;
}

} // namespace

std::shared_ptr<const function_record> metadata_cache::find(const key_type& key) const {
  std::lock_guard lk(mutex_);
  auto it = entries_.find(key);
  return it == entries_.end() ? nullptr : it->second;
}

uint64_t metadata_cache::ticket() const {
  std::lock_guard lk(mutex_);
  return erased_;
}

void metadata_cache::insert(const key_type& key, const function_record& record, uint64_t ticket) {
  auto copy = std::make_shared<const function_record>(record);
  std::lock_guard lk(mutex_);
  if (ticket != erased_)
    return; // a change may have raced this answer: ask again next time
  if (entries_.size() >= capacity_ && entries_.count(key) == 0)
    entries_.erase(entries_.begin());
  entries_[key] = std::move(copy);
}

void metadata_cache::erase(const key_type& key) {
  std::shared_ptr<const function_record> gone;
  std::lock_guard lk(mutex_);
  ++erased_;
  if (auto it = entries_.find(key); it != entries_.end()) {
    gone = std::move(it->second); // freed after the lock is released
    entries_.erase(it);
  }
}

size_t metadata_cache::size() const {
  std::lock_guard lk(mutex_);
  return entries_.size();
}

void invoke_metrics::observe_init(int64_t micros) {
  std::lock_guard lk(mutex_);
  observe(init_.counts, init_.sum, init_.count, micros);
}

void invoke_metrics::observe_invoke(int64_t micros) {
  std::lock_guard lk(mutex_);
  observe(invoke_.counts, invoke_.sum, invoke_.count, micros);
}

std::string invoke_metrics::render() const {
  std::string out;
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    out += std::string{"# HELP "} + name + " " + help + "\n# TYPE " + name + " counter\n" + name
           + " " + std::to_string(v) + "\n";
  };
  out += "# HELP nimbus_frontend_metadata_cache_total Function metadata lookups, by "
         "where they were answered.\n"
         "# TYPE nimbus_frontend_metadata_cache_total counter\n"
         "nimbus_frontend_metadata_cache_total{result=\"hit\"} "
         + std::to_string(cache_hits.load())
         + "\nnimbus_frontend_metadata_cache_total{result=\"miss\"} "
         + std::to_string(cache_misses.load()) + "\n";
  counter("nimbus_invocations_total", "Invocations that reached a function.", invocations);
  counter("nimbus_function_errors_total", "Invocations that ended in a function error.",
          function_errors);
  counter("nimbus_throttles_total", "Invocations refused with 429.", throttles);
  counter("nimbus_cold_starts_total", "Invocations that needed a new environment.",
          cold_starts);
  out += "# HELP nimbus_concurrent_executions Invocations in flight.\n"
         "# TYPE nimbus_concurrent_executions gauge\nnimbus_concurrent_executions "
         + std::to_string(std::max<int64_t>(0, concurrent.load())) + "\n";
  std::lock_guard lk(mutex_);
  out += render_histogram("nimbus_init_duration_seconds", init_.counts, init_.sum, init_.count);
  out += render_histogram("nimbus_invoke_duration_seconds", invoke_.counts, invoke_.sum,
                          invoke_.count);
  return out;
}

namespace {

std::string format_ms(int64_t micros) {
  return storage::format_millis(micros, 3);
}

// The async path's figures in the Prometheus text format.
std::string render_queue_metrics(const queue_stats& q, uint32_t pollers) {
  std::string out;
  auto gauge = [&](const char* name, const char* help, auto value) {
    out += std::string{"# HELP "} + name + " " + help + "\n# TYPE " + name + " gauge\n" + name
           + " " + std::to_string(value) + "\n";
  };
  auto counter = [&](const char* name, const char* help, uint64_t value) {
    out += std::string{"# HELP "} + name + " " + help + "\n# TYPE " + name + " counter\n" + name
           + " " + std::to_string(value) + "\n";
  };
  gauge("nimbus_async_queue_depth", "Async events waiting or running.", q.depth);
  gauge("nimbus_async_events_leased", "Async events being run by a poller.", q.leased);
  gauge("nimbus_async_oldest_event_age_seconds", "Age of the oldest queued async event.",
        static_cast<double>(q.oldest_age_ms) / 1000.0);
  gauge("nimbus_async_pollers", "Pollers running.", pollers);
  counter("nimbus_async_events_accepted_total", "Async events stored and answered with 202.",
          q.accepted);
  counter("nimbus_async_attempts_total", "Deliveries of async events to pollers.", q.attempts);
  counter("nimbus_async_retries_total", "Async events put back for a later attempt.",
          q.retries);
  counter("nimbus_async_duplicates_total",
          "Deliveries that may run an event a second time (after a crash or an expired lease).",
          q.duplicates);
  counter("nimbus_async_stale_completions_total",
          "Completions rejected because their lease had expired.", q.stale_completions);
  out += "# HELP nimbus_async_outcomes_total Finished async events by condition.\n"
         "# TYPE nimbus_async_outcomes_total counter\n";
  for (const auto& [condition, n] : q.outcomes)
    out += "nimbus_async_outcomes_total{condition=\"" + condition + "\"} " + std::to_string(n)
           + "\n";
  return out;
}

// The response to an invocation that ran (or failed in INIT, which Lambda
// also reports as a function error).
http_response invocation_response(invoke_outcome& o, bool tail,
                                   std::chrono::steady_clock::time_point received,
                                   int64_t queue_us) {
  auto& r = o.result;
  http_response res;
  res.status = 200;
  res.body = std::move(r.payload);
  res.headers.reserve(6);
  res.set_header("Content-Type", "application/json");
  res.set_header("X-Amz-Executed-Version", "$LATEST");
  if (r.outcome != "success")
    res.set_header("X-Amz-Function-Error", "Unhandled");
  if (tail) {
    // The last 4 KB of the log, as AWS returns it.
    auto log = r.log.size() > 4096 ? r.log.substr(r.log.size() - 4096) : r.log;
    res.set_header("X-Amz-Log-Result", storage::base64_encode(log));
  }
  // How the invocation was served: warm or cold, and where the time went.
  res.set_header("X-Nimbus-Start", o.cold ? "cold" : "warm");
  auto total = std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::steady_clock::now() - received)
                 .count();
  std::string timing;
  timing.reserve(160);
  auto phase = [&timing](const char* name, int64_t us) {
    if (!timing.empty())
      timing += ", ";
    timing += name;
    timing += ";dur=";
    timing += format_ms(us);
  };
  phase("queue", queue_us);
  if (o.cold) {
    phase("placement", o.placement_us);
    phase("sandbox", o.sandbox_us);
    phase("init", o.init_us);
  }
  phase("invoke", r.duration_us);
  phase("total", total);
  res.set_header("Server-Timing", std::move(timing));
  return res;
}

// 429 TooManyRequestsException with the limit's Reason (in the body, as the
// AWS model has it) and Retry-After.
http_response throttled_response(const caf::error& err) {
  auto res = error_response({429, "TooManyRequestsException", "Rate Exceeded."});
  res.body.insert(res.body.size() - 1, ",\"Reason\":\"" + error_message(err) + "\"");
  res.set_header("Retry-After", "1");
  return res;
}

// Invoke with X-Amz-Invocation-Type Event: the event is stored durably in
// its function's queue partition, then the caller gets 202 (never before).
void enqueue_event(self_ptr self, response_promise rp,
                   std::chrono::steady_clock::time_point start, const std::string& request_id,
                   const std::string& account, const function_record& rec,
                   const std::string& payload) {
  auto& st = self->state;
  if (!st.config.queues) {
    finish(self, rp, operation::invoke, start,
           error_response({500, "ServiceException", "This node does not queue events"}));
    return;
  }
  queued_event ev;
  ev.request_id = request_id;
  ev.account_id = account;
  ev.function_name = rec.name;
  ev.payload = payload;
  ev.enqueued_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     st.config.now().time_since_epoch())
                     .count();
  ev.timeout_s = rec.timeout;
  self->request(st.config.queues, caf::infinite, enqueue_atom::value, std::move(ev))
    .then(
      [=](std::string&) mutable {
        http_response res;
        res.status = 202;
        finish(self, rp, operation::invoke, start, std::move(res));
      },
      [=](caf::error& err) mutable {
        finish(self, rp, operation::invoke, start,
               error_response({500, "ServiceException",
                               "The event was not accepted: " + error_message(err)}));
      });
}

// Whether `text` (a decoded client context) is a JSON object, as the
// runtimes expect (context.client_context, context.clientContext). The
// runtime gets it in a header, so it is rewritten into the same value in
// printable ASCII when it is not already: minified (JSON has line breaks
// only between tokens) and with DEL and every non-ASCII character as a \u
// escape (such bytes occur only inside strings; header values are read as
// Latin-1 by some HTTP clients, e.g. Node's).
bool header_ready_json_object(simdjson::dom::parser& parser, std::string& text) {
  simdjson::dom::element doc;
  if (parser.parse(text.data(), text.size()).get(doc) || !doc.is_object())
    return false;
  auto plain = [](unsigned char c) { return c >= 0x20 && c < 0x7f; };
  if (std::all_of(text.begin(), text.end(), plain))
    return true;
  std::string compact(text.size(), '\0');
  size_t size = 0;
  if (simdjson::minify(text.data(), text.size(), compact.data(), size))
    return false;
  compact.resize(size);
  std::string out;
  out.reserve(compact.size() + 64);
  auto escape = [&out](uint32_t unit) {
    static constexpr char hex[] = "0123456789abcdef";
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4)
      out += hex[(unit >> shift) & 15];
  };
  for (size_t i = 0; i < compact.size();) {
    auto c = static_cast<unsigned char>(compact[i]);
    if (c < 0x7f) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    if (c == 0x7f) { // DEL: allowed in JSON strings, not in header values
      escape(c);
      ++i;
      continue;
    }
    // simdjson validated the UTF-8: a lead byte and its continuation bytes.
    size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    if (i + n > compact.size())
      return false;
    uint32_t cp = c & (0x7f >> n);
    for (size_t k = 1; k < n; ++k)
      cp = (cp << 6) | (static_cast<unsigned char>(compact[i + k]) & 0x3f);
    if (cp >= 0x10000) {
      cp -= 0x10000;
      escape(0xd800 + (cp >> 10));
      escape(0xdc00 + (cp & 0x3ff));
    } else {
      escape(cp);
    }
    i += n;
  }
  text = std::move(out);
  return true;
}

void handle_invoke(self_ptr self, response_promise rp, std::chrono::steady_clock::time_point start,
                   http_request& req, const route& r, const std::string& account) {
  auto& st = self->state;
  auto op = operation::invoke;
  auto fail = [&](const api_error& e) { finish(self, rp, op, start, error_response(e)); };
  auto n = resolve(st, account, r, 256);
  if (n.error) {
    fail(*n.error);
    return;
  }
  const auto region = st.config.region;
  if (n.qualifier && *n.qualifier != "$LATEST") {
    fail({404, "ResourceNotFoundException",
          "Function not found: " + function_arn(region, account, n.name, *n.qualifier)});
    return;
  }
  auto type = std::string{req.header("X-Amz-Invocation-Type").value_or("RequestResponse")};
  if (type != "RequestResponse" && type != "DryRun" && type != "Event") {
    fail(invalid_parameter("invocationType", type,
                           "Member must satisfy enum value set: [Event, RequestResponse, DryRun]"));
    return;
  }
  if (type == "Event" && req.body.size() > st.config.async_payload_bytes) {
    // The HTTP server decides this from Content-Length already; this catches
    // a chunked body.
    fail({413, "RequestTooLargeException",
          "Request must be smaller than " + std::to_string(st.config.async_payload_bytes)
            + " bytes for the InvokeAsync operation"});
    return;
  }
  auto log_type = std::string{req.header("X-Amz-Log-Type").value_or("None")};
  if (log_type != "None" && log_type != "Tail") {
    fail(invalid_parameter("logType", log_type, "Member must satisfy enum value set: [None, Tail]"));
    return;
  }
  bool tail = log_type == "Tail";
  // An invocation without a payload gets the empty object, as on AWS.
  // The body is moved along, never copied (it may be 6 MB).
  std::string payload = req.body.empty() ? std::string{"{}"} : std::move(req.body);
  {
    // One parser for the actor's lifetime: it keeps its buffers between
    // invocations instead of allocating them per request.
    if (!st.json)
      st.json = std::make_shared<simdjson::dom::parser>();
    simdjson::dom::element doc;
    if (auto err = st.json->parse(payload.data(), payload.size()).get(doc)) {
      fail({400, "InvalidRequestContentException",
            std::string{"Could not parse request body into json: "}
              + simdjson::error_message(err)});
      return;
    }
  }
  std::string client_context;
  if (auto cc = req.header("X-Amz-Client-Context"); cc && !cc->empty()) {
    auto decoded = cc->size() <= 4780 ? storage::base64_decode(*cc) : std::nullopt;
    if (!decoded || decoded->size() > 3583 || !header_ready_json_object(*st.json, *decoded)) {
      fail({400, "InvalidRequestContentException",
            "Client context must be a base64-encoded JSON object of at most 3583 bytes"});
      return;
    }
    client_context = std::move(*decoded);
  }
  auto key = std::make_pair(account, n.name);
  // With the function's record in hand: lease, run, release.
  auto request_id = req.request_id;
  auto shard = req.shard;
  auto proceed = [self, rp, start, type, tail, payload = std::move(payload), client_context, account,
                  request_id, shard](std::shared_ptr<const function_record> record) mutable {
    const auto& rec = *record;
    auto op = operation::invoke;
    auto& st = self->state;
    if (type == "DryRun") {
      http_response res;
      res.status = 204;
      finish(self, rp, op, start, std::move(res));
      return;
    }
    if (type == "Event") {
      enqueue_event(self, rp, start, request_id, account, rec, payload);
      return;
    }
    if (!st.counter || !st.assignment) {
      finish(self, rp, op, start,
             error_response({500, "ServiceException", "This node does not run functions"}));
      return;
    }
    // Requests on the invocation path carry no timeout: each would wake
    // CAF's clock thread, and the counter and assignment always answer (the
    // node stops if one of them dies, see system.cpp).
    // The record is shared with the cache and the order, never copied per
    // invocation (it holds a dozen strings).
    self->request(st.counter, caf::infinite, acquire_atom::value, account, rec.name)
      .then(
        [=, payload = std::move(payload)](uint64_t lease) mutable {
          auto& st = self->state;
          ++st.invocations->concurrent;
          auto queue_us = std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::steady_clock::now() - start)
                            .count();
          invoke_order order;
          // Only the function's name is needed after this.
          auto name = record->name;
          order.function = record;
          order.request.request_id = storage::request_uuid();
          order.request.payload = std::move(payload);
          order.request.client_context = client_context;
          order.shard = shard;
          // X-Ray form: Root=1-<Unix seconds, 8 hex digits>-<96 random bits>.
          char epoch[9];
          std::snprintf(epoch, sizeof epoch, "%08x",
                        static_cast<unsigned>(std::time(nullptr)));
          auto& trace = order.request.trace_id;
          trace.reserve(80);
          trace += "Root=1-";
          trace += epoch;
          trace += '-';
          storage::append_request_hex(trace, 12);
          trace += ";Parent=";
          storage::append_request_hex(trace, 8);
          trace += ";Sampled=0";
          // The lease goes back however the invocation ends.
          auto release = [self, lease] {
            auto& st = self->state;
            --st.invocations->concurrent;
            self->send(st.counter, release_atom::value, lease);
          };
          self->request(st.assignment, caf::infinite, invoke_atom::value, std::move(order))
            .then(
              [=](invoke_outcome& outcome) mutable {
                release();
                auto& st = self->state;
                auto& m = *st.invocations;
                ++m.invocations;
                if (outcome.cold) {
                  ++m.cold_starts;
                  m.observe_init(outcome.init_us);
                }
                m.observe_invoke(outcome.result.duration_us);
                if (outcome.result.outcome != "success")
                  ++m.function_errors;
                if (st.config.logs)
                  st.config.logs->append(account, name, outcome.result.log);
                finish(self, rp, operation::invoke, start,
                       invocation_response(outcome, tail, start, queue_us));
              },
              [=](caf::error& err) mutable {
                release();
                auto& st = self->state;
                if (err == ec::init_failed) {
                  // Lambda reports a failed INIT as a function error of the
                  // invocation that triggered it.
                  ++st.invocations->invocations;
                  ++st.invocations->function_errors;
                  invoke_outcome o;
                  o.cold = true;
                  o.result.outcome = "init_error";
                  o.result.payload = error_message(err);
                  auto text = "INIT_REPORT Status: error\n" + o.result.payload + "\n";
                  if (st.config.logs)
                    st.config.logs->append(account, name, text);
                  o.result.log = text;
                  finish(self, rp, operation::invoke, start,
                         invocation_response(o, tail, start, 0));
                  return;
                }
                if (err == ec::throttled) {
                  ++st.invocations->throttles;
                  finish(self, rp, operation::invoke, start, throttled_response(err));
                  return;
                }
                if (err == ec::environment_unavailable) {
                  // The node has no memory left for another environment: a
                  // throttle the client may retry, not a service failure.
                  ++st.invocations->throttles;
                  finish(self, rp, operation::invoke, start,
                         throttled_response(make_error(ec::throttled,
                                                       "ConcurrentInvocationLimitExceeded")));
                  return;
                }
                finish(self, rp, operation::invoke, start, error_response(to_api_error(err)));
              });
        },
        [=](caf::error& err) mutable {
          auto& st = self->state;
          if (err == ec::throttled) {
            ++st.invocations->throttles;
            finish(self, rp, operation::invoke, start, throttled_response(err));
            return;
          }
          finish(self, rp, operation::invoke, start, error_response(to_api_error(err)));
        });
  };
  if (auto hit = st.cache->find(key)) {
    ++st.invocations->cache_hits;
    proceed(std::move(hit));
    return;
  }
  ++st.invocations->cache_misses;
  auto ticket = st.cache->ticket();
  self->request(st.registry, st.config.request_timeout, get_atom::value, account, n.name)
    .then(
      [=](function_record& rec) mutable {
        self->state.cache->insert(key, rec, ticket);
        proceed(std::make_shared<const function_record>(std::move(rec)));
      },
      [=](caf::error& err) mutable {
        finish(self, rp, operation::invoke, start, error_response(to_api_error(err)));
      });
}

// Looks a function up in the metadata cache, else asks the registry (and
// caches the answer), and answers with `render`. A missing function is
// answered with `missing`: AWS words "not found" differently per operation.
template <class Render>
void with_function(self_ptr self, response_promise rp, operation op,
                   std::chrono::steady_clock::time_point start, const std::string& account,
                   const std::string& name, api_error missing, Render render) {
  auto& st = self->state;
  auto key = std::make_pair(account, name);
  if (auto hit = st.cache->find(key)) {
    ++st.invocations->cache_hits;
    finish(self, rp, op, start, render(*hit));
    return;
  }
  ++st.invocations->cache_misses;
  auto ticket = st.cache->ticket();
  self->request(st.registry, st.config.request_timeout, get_atom::value, account, name)
    .then(
      [=](function_record& rec) mutable {
        self->state.cache->insert(key, rec, ticket);
        finish(self, rp, op, start, render(rec));
      },
      [=](caf::error& err) mutable {
        finish(self, rp, op, start,
               error_response(err == ec::resource_not_found ? missing : to_api_error(err)));
      });
}

// Put/Update/Get/DeleteFunctionEventInvokeConfig and
// ListFunctionEventInvokeConfigs. Only $LATEST exists on this node, so it is
// the only qualifier that can have a config.
void handle_event_invoke_config(self_ptr self, response_promise rp,
                                std::chrono::steady_clock::time_point start,
                                const http_request& req, const route& r,
                                const std::string& account) {
  auto& st = self->state;
  const auto op = r.op;
  auto fail = [&](const api_error& e) { finish(self, rp, op, start, error_response(e)); };
  auto n = resolve(st, account, r, 140);
  if (n.error) {
    fail(*n.error);
    return;
  }
  const auto region = st.config.region;
  const auto qualifier = n.qualifier.value_or("$LATEST");
  const bool latest = qualifier == "$LATEST";
  // The two ways AWS says "not found" here: Put, Update and List name no ARN;
  // Get and Delete (and Update without a config) name the qualified one.
  const api_error no_function{404, "ResourceNotFoundException", "The function doesn't exist."};
  const api_error no_config{404, "ResourceNotFoundException",
                            "The function " + function_arn(region, account, n.name, qualifier)
                              + " doesn't have an EventInvokeConfig"};
  auto render_config = [region](const function_record& rec) {
    if (!rec.event_invoke)
      // The registry only answers with a config; this is a defect, not a 404.
      return error_response({500, "ServiceException", "The event invoke config is missing"});
    return json_response(200, event_invoke_config_json(function_arn(region, rec.account_id,
                                                                    rec.name, "$LATEST"),
                                                       *rec.event_invoke));
  };
  switch (op) {
    case operation::put_function_event_invoke_config:
    case operation::update_function_event_invoke_config: {
      auto p = parse_event_invoke_config(req.body,
                                         op == operation::put_function_event_invoke_config);
      if (!p.value) {
        fail(p.error);
        return;
      }
      if (!latest) {
        fail(no_function);
        return;
      }
      ask_registry(self, rp, op, start, render_config, event_config_atom::value, account, n.name,
                   std::move(*p.value));
      return;
    }
    case operation::delete_function_event_invoke_config: {
      if (!latest) {
        fail(no_config);
        return;
      }
      ask_registry(
        self, rp, op, start,
        [](function_record&) {
          http_response res;
          res.status = 204;
          return res;
        },
        event_config_atom::value, delete_atom::value, account, n.name);
      return;
    }
    case operation::get_function_event_invoke_config: {
      if (!latest) {
        fail(no_config);
        return;
      }
      with_function(self, rp, op, start, account, n.name, no_config,
                    [no_config, render_config](const function_record& rec) {
                      return rec.event_invoke ? render_config(rec) : error_response(no_config);
                    });
      return;
    }
    case operation::list_function_event_invoke_configs: {
      if (!latest) {
        fail(no_function);
        return;
      }
      int32_t max_items = 50;
      if (auto mi = r.param("MaxItems")) {
        if (mi->empty() || mi->size() > 5
            || mi->find_first_not_of("0123456789") != std::string::npos || std::stoi(*mi) < 1
            || std::stoi(*mi) > 50) {
          fail(invalid_parameter("maxItems", *mi, "Member must have value between 1 and 50"));
          return;
        }
        max_items = std::stoi(*mi);
      }
      // The marker is the base64 of the last qualifier listed; configs are
      // listed in qualifier order.
      std::string after;
      if (auto mk = r.param("Marker"); mk && !mk->empty()) {
        auto decoded = storage::base64_decode(*mk);
        if (!decoded || decoded->empty()) {
          fail({400, "InvalidParameterValueException", "Invalid Marker"});
          return;
        }
        after = *decoded;
      }
      with_function(self, rp, op, start, account, n.name, no_function,
                    [region, max_items, after](const function_record& rec) {
                      std::vector<std::pair<std::string, storage::event_invoke_config>> all;
                      if (rec.event_invoke)
                        all.emplace_back("$LATEST", *rec.event_invoke);
                      std::vector<std::pair<std::string, storage::event_invoke_config>> page;
                      std::string next;
                      for (auto& [q, config] : all) {
                        if (!after.empty() && q <= after)
                          continue;
                        if (static_cast<int32_t>(page.size()) == max_items) {
                          next = storage::base64_encode(page.back().first);
                          break;
                        }
                        page.emplace_back(q, config);
                      }
                      for (auto& entry : page)
                        entry.first = function_arn(region, rec.account_id, rec.name, entry.first);
                      return json_response(200, list_event_invoke_configs_json(page, next));
                    });
      return;
    }
    default:
      break;
  }
  fail({500, "ServiceException", "Unhandled operation"});
}

void handle(self_ptr self, http_request& req, response_promise rp) {
  auto start = std::chrono::steady_clock::now();
  auto& st = self->state;
  auto m = match(req.method, req.target);
  if (!m.matched) {
    finish(self, rp, "Unknown", start,
           error_response({m.error.status, m.error.type, m.error.message}));
    return;
  }
  auto& r = *m.matched;
  auto op = r.op;
  auto answer = [&](http_response res) { finish(self, rp, op, start, std::move(res)); };
  auto fail = [&](const api_error& e) { answer(error_response(e)); };

  // -- public operations ------------------------------------------------------
  if (op == operation::health) {
    storage::json_writer w;
    w.begin_object().key("status").value("ok").key("node").value(st.config.node_name).end_object();
    answer(json_response(200, w.take()));
    return;
  }
  if (op == operation::metrics) {
    http_response res;
    res.body = st.config.metrics->render();
    res.body += st.invocations->render();
    if (st.config.extra_metrics)
      res.body += st.config.extra_metrics();
    res.set_header("Content-Type", "text/plain; version=0.0.4");
    if (!st.assignment) {
      answer(std::move(res));
      return;
    }
    // Environments by state come from the assignment partition.
    self->request(st.assignment, std::chrono::seconds{2}, stats_atom::value)
      .then(
        [=](std::map<std::string, uint64_t>& counts) mutable {
          res.body += "# HELP nimbus_environments Execution environments by state.\n"
                      "# TYPE nimbus_environments gauge\n";
          for (const auto& [state, n] : counts)
            res.body += "nimbus_environments{state=\"" + state + "\"} " + std::to_string(n)
                        + "\n";
          if (!self->state.config.queues) {
            finish(self, rp, operation::metrics, start, std::move(res));
            return;
          }
          // The async path's figures come from the queue manager.
          self->request(self->state.config.queues, std::chrono::seconds{2}, stats_atom::value)
            .then(
              [=](queue_stats& q, uint32_t pollers) mutable {
                res.body += render_queue_metrics(q, pollers);
                finish(self, rp, operation::metrics, start, std::move(res));
              },
              [=](caf::error&) mutable {
                finish(self, rp, operation::metrics, start, std::move(res));
              });
        },
        [=](caf::error&) mutable { finish(self, rp, operation::metrics, start, std::move(res)); });
    return;
  }
  if (op == operation::download_code) {
    auto expires = r.param("Expires").value_or("");
    auto signature = r.param("Signature").value_or("");
    auto now = std::chrono::duration_cast<std::chrono::seconds>(
                 st.config.now().time_since_epoch())
                 .count();
    const auto& account = r.labels[0];
    const auto& name = r.labels[1];
    const auto& hex = r.labels[2];
    // Digits only, and a number that fits (from_chars, unlike stoll, does
    // not throw on one that does not: that was a 500).
    int64_t expires_at = 0;
    auto parsed = std::from_chars(expires.data(), expires.data() + expires.size(), expires_at);
    bool valid = !expires.empty() && parsed.ec == std::errc{}
                 && parsed.ptr == expires.data() + expires.size() && expires_at >= now
                 && storage::constant_time_equal(
                   signature, download_signature(st, account, name, hex, expires));
    if (!valid) {
      fail({403, "AccessDeniedException", "The code link is invalid or has expired"});
      return;
    }
    self->request(st.registry, st.config.request_timeout, fetch_code_atom::value, account, name, hex)
      .then(
        [=](std::string& code) mutable {
          http_response res;
          res.body = std::move(code);
          res.set_header("Content-Type", "application/zip");
          finish(self, rp, op, start, std::move(res));
        },
        [=](caf::error& err) mutable {
          finish(self, rp, op, start, error_response(to_api_error(err)));
        });
    return;
  }

  // -- authentication ---------------------------------------------------------
  sigv4::verify_options options{st.config.region, "lambda", st.config.clock_skew};
  auto lookup = [&](std::string_view key) -> std::optional<std::string> {
    auto it = st.by_access_key.find(std::string{key});
    if (it == st.by_access_key.end())
      return std::nullopt;
    return it->second.secret_access_key;
  };
  std::string account;
  if (st.config.authenticate) {
    auto verified = sigv4::verify(req, lookup, options, st.config.now());
    if (!verified.ok) {
      config::logger("actors")->info("frontend rejected a request from {}: {}", req.remote,
                                     verified.message);
      fail(auth_failure(verified));
      return;
    }
    account = st.by_access_key.at(verified.access_key_id).id;
  } else {
    account = st.config.accounts.front().id;
  }

  // -- operations -------------------------------------------------------------
  const auto region = st.config.region;
  auto render_config = [region](int status) {
    return [region, status](const function_record& rec) {
      return json_response(status, configuration_json(rec, region));
    };
  };
  switch (op) {
    case operation::push_image: {
      // The HTTP server spooled the archive to disk (and SigV4 checked its
      // hash); a detached code builder flattens and stores it. The server
      // removes the spool file after the response.
      if (!st.config.code || !req.spooled()) {
        fail({500, "ServiceException", "This node does not store container images"});
        return;
      }
      code_builder_config bc;
      bc.code = st.config.code;
      bc.region = region;
      auto builder = spawn_code_builder(self->system(), std::move(bc));
      self->request(builder, caf::infinite, build_atom::value, account, req.body_file,
                    r.labels[0], r.labels[1])
        .then(
          [=](std::string& body) mutable {
            finish(self, rp, op, start, json_response(200, std::move(body)));
          },
          [=](caf::error& err) mutable {
            finish(self, rp, op, start, error_response(to_api_error(err)));
          });
      return;
    }
    case operation::create_function: {
      auto p = parse_create_function(req.body, st.config.codec);
      if (!p.value) {
        fail(p.error);
        return;
      }
      ask_registry(self, rp, op, start, render_config(201), create_atom::value, account,
                   std::move(*p.value));
      return;
    }
    case operation::get_function:
    case operation::get_function_configuration: {
      auto n = resolve(st, account, r, 170);
      if (n.error) {
        fail(*n.error);
        return;
      }
      if (n.qualifier && *n.qualifier != "$LATEST") {
        fail({404, "ResourceNotFoundException",
              "Function not found: " + function_arn(region, account, n.name, *n.qualifier)});
        return;
      }
      std::function<http_response(const function_record&)> render = render_config(200);
      if (op == operation::get_function) {
        auto host = std::string{req.header("Host").value_or("127.0.0.1")};
        render = [self, region, host](const function_record& rec) {
          return json_response(200, get_function_json(rec, region,
                                                      code_location(self->state, host, rec)));
        };
      }
      auto key = std::make_pair(account, n.name);
      if (auto hit = st.cache->find(key)) {
        ++st.invocations->cache_hits;
        answer(render(*hit));
        return;
      }
      ++st.invocations->cache_misses;
      ask_registry(
        self, rp, op, start,
        [self, key, render, ticket = st.cache->ticket()](function_record& rec) {
          self->state.cache->insert(key, rec, ticket);
          return render(rec);
        },
        get_atom::value, account, n.name);
      return;
    }
    case operation::list_functions: {
      int32_t max_items = 50;
      if (auto mi = r.param("MaxItems")) {
        if (mi->empty() || mi->size() > 5 || mi->find_first_not_of("0123456789") != std::string::npos
            || std::stoi(*mi) < 1 || std::stoi(*mi) > 10000) {
          fail(invalid_parameter("maxItems", *mi,
                                 "Member must have value between 1 and 10000"));
          return;
        }
        // AWS returns at most 50 functions per page whatever MaxItems says.
        max_items = std::min(std::stoi(*mi), 50);
      }
      std::string marker;
      if (auto mk = r.param("Marker"); mk && !mk->empty()) {
        auto decoded = storage::base64_decode(*mk);
        if (!decoded || !valid_function_name(*decoded)) {
          fail({400, "InvalidParameterValueException", "Invalid Marker"});
          return;
        }
        marker = *decoded;
      }
      self->request(st.registry, st.config.request_timeout, list_atom::value, account, marker,
                    max_items)
        .then(
          [=](function_page& page) mutable {
            auto next = page.next_marker.empty() ? std::string{}
                                                 : storage::base64_encode(page.next_marker);
            finish(self, rp, op, start,
                   json_response(200, list_functions_json(page.functions, region, next)));
          },
          [=](caf::error& err) mutable {
            finish(self, rp, op, start, error_response(to_api_error(err)));
          });
      return;
    }
    case operation::delete_function: {
      auto n = resolve(st, account, r, 140);
      if (n.error) {
        fail(*n.error);
        return;
      }
      if (n.qualifier) {
        if (*n.qualifier == "$LATEST")
          fail({400, "InvalidParameterValueException",
                "$LATEST version cannot be deleted without deleting the function."});
        else
          fail({404, "ResourceNotFoundException",
                "Function not found: " + function_arn(region, account, n.name, *n.qualifier)});
        return;
      }
      self->request(st.registry, st.config.request_timeout, delete_atom::value, account, n.name)
        .then(
          [=](bool) mutable {
            http_response res;
            res.status = 204;
            finish(self, rp, op, start, std::move(res));
          },
          [=](caf::error& err) mutable {
            finish(self, rp, op, start, error_response(to_api_error(err)));
          });
      return;
    }
    case operation::update_function_code:
    case operation::update_function_configuration: {
      auto n = resolve(st, account, r, 140);
      if (n.error) {
        fail(*n.error);
        return;
      }
      if (n.qualifier && *n.qualifier != "$LATEST") {
        fail({400, "InvalidParameterValueException",
              "Only $LATEST can be updated; a qualifier must not be given"});
        return;
      }
      if (op == operation::update_function_code) {
        auto p = parse_update_code(req.body, st.config.codec);
        if (!p.value) {
          fail(p.error);
          return;
        }
        ask_registry(self, rp, op, start, render_config(200), update_code_atom::value, account,
                     n.name, std::move(*p.value));
      } else {
        auto p = parse_update_configuration(req.body, st.config.codec);
        if (!p.value) {
          fail(p.error);
          return;
        }
        ask_registry(self, rp, op, start, render_config(200), update_config_atom::value,
                     account, n.name, std::move(*p.value));
      }
      return;
    }
    case operation::get_account_settings: {
      const auto limits = st.config.limits;
      self->request(st.registry, st.config.request_timeout, usage_atom::value, account)
        .then(
          [=](account_usage& usage) mutable {
            account_settings s;
            s.total_code_size_limit = limits.total_code_size;
            s.code_size_unzipped_limit = limits.code_size_unzipped;
            s.code_size_zipped_limit = limits.code_size_zipped;
            s.concurrent_executions = limits.concurrent_executions;
            s.unreserved_concurrent_executions = limits.concurrent_executions;
            s.total_code_size = usage.total_code_size;
            s.function_count = usage.function_count;
            finish(self, rp, op, start, json_response(200, account_settings_json(s)));
          },
          [=](caf::error& err) mutable {
            finish(self, rp, op, start, error_response(to_api_error(err)));
          });
      return;
    }
    case operation::invoke:
      handle_invoke(self, rp, start, req, r, account);
      return;
    case operation::put_function_concurrency:
    case operation::get_function_concurrency:
    case operation::delete_function_concurrency: {
      auto n = resolve(st, account, r, 140);
      if (n.error) {
        fail(*n.error);
        return;
      }
      auto render = [op](const function_record& rec) {
        if (op == operation::delete_function_concurrency) {
          http_response res;
          res.status = 204;
          return res;
        }
        storage::json_writer w;
        w.begin_object();
        if (rec.reserved_concurrency >= 0)
          w.key("ReservedConcurrentExecutions").value(rec.reserved_concurrency);
        w.end_object();
        return json_response(200, w.take());
      };
      if (op == operation::get_function_concurrency) {
        ask_registry(self, rp, op, start, render, get_atom::value, account, n.name);
        return;
      }
      int32_t value = -1;
      if (op == operation::put_function_concurrency) {
        simdjson::dom::parser parser;
        simdjson::dom::element doc;
        int64_t v = -1;
        if (parser.parse(req.body.data(), req.body.size()).get(doc)) {
          fail({400, "InvalidRequestContentException",
                "Could not parse request body into json"});
          return;
        }
        if (doc["ReservedConcurrentExecutions"].get_int64().get(v) || v < 0 || v > 1'000'000) {
          fail(invalid_parameter("reservedConcurrentExecutions",
                                 v < 0 ? std::string{"missing"} : std::to_string(v),
                                 "Member must have value greater than or equal to 0"));
          return;
        }
        value = static_cast<int32_t>(v);
      }
      ask_registry(self, rp, op, start, render, concurrency_atom::value, account, n.name, value);
      return;
    }
    case operation::put_function_event_invoke_config:
    case operation::update_function_event_invoke_config:
    case operation::get_function_event_invoke_config:
    case operation::delete_function_event_invoke_config:
    case operation::list_function_event_invoke_configs:
      handle_event_invoke_config(self, rp, start, req, r, account);
      return;
    case operation::get_function_logs: {
      auto n = resolve(st, account, r, 140);
      if (n.error) {
        fail(*n.error);
        return;
      }
      uint64_t tail = 64 * 1024;
      if (auto t = r.param("Tail"); t && !t->empty() && t->size() < 10
                                     && t->find_first_not_of("0123456789") == std::string::npos)
        tail = std::min<uint64_t>(std::stoull(*t), 16 << 20);
      auto logs = st.config.logs;
      ask_registry(
        self, rp, op, start,
        [logs, account, tail](const function_record& rec) {
          http_response res;
          res.body = logs ? logs->tail(account, rec.name, tail) : std::string{};
          res.set_header("Content-Type", "text/plain; charset=utf-8");
          return res;
        },
        get_atom::value, account, n.name);
      return;
    }
    case operation::receive_queue_messages: {
      if (!st.config.queues) {
        fail({500, "ServiceException", "This node does not keep queues"});
        return;
      }
      uint32_t max = 1;
      if (auto m = r.param("MaxNumberOfMessages")) {
        if (*m != "1" && *m != "2" && *m != "3" && *m != "4" && *m != "5" && *m != "6"
            && *m != "7" && *m != "8" && *m != "9" && *m != "10") {
          fail(invalid_parameter("maxNumberOfMessages", *m,
                                 "Member must be between 1 and 10, inclusive"));
          return;
        }
        max = static_cast<uint32_t>(std::stoul(*m));
      }
      self->request(st.config.queues, caf::infinite, receive_atom::value, account,
                    r.function_name, max)
        .then(
          [=](std::vector<queued_event>& messages) mutable {
            storage::json_writer w;
            w.begin_object().key("Messages").begin_array();
            for (const auto& m : messages) {
              w.begin_object()
                .key("MessageId").value(m.request_id)
                .key("ReceiptHandle")
                .value(std::to_string(m.seq) + "." + std::to_string(m.lease))
                .key("Body").value(m.payload)
                .key("ApproximateReceiveCount").value(m.attempts)
                .key("SentTimestamp").value(m.enqueued_ms);
              if (!m.attributes.empty()) {
                w.key("MessageAttributes").begin_object();
                for (const auto& [k, v] : m.attributes)
                  w.key(k).value(v);
                w.end_object();
              }
              w.end_object();
            }
            w.end_array().end_object();
            finish(self, rp, operation::receive_queue_messages, start,
                   json_response(200, w.take()));
          },
          [=](caf::error& err) mutable {
            finish(self, rp, operation::receive_queue_messages, start,
                   error_response(to_api_error(err)));
          });
      return;
    }
    case operation::delete_queue_message: {
      if (!st.config.queues) {
        fail({500, "ServiceException", "This node does not keep queues"});
        return;
      }
      // ReceiptHandle: "<seq>.<lease>" as handed out by receive.
      const auto& receipt = r.labels.front();
      auto dot = receipt.find('.');
      uint64_t seq = 0, lease = 0;
      bool valid = dot != std::string::npos && dot > 0 && dot + 1 < receipt.size()
                   && receipt.find_first_not_of("0123456789.") == std::string::npos
                   && receipt.find('.', dot + 1) == std::string::npos && dot <= 19
                   && receipt.size() - dot - 1 <= 19;
      if (valid) {
        seq = std::stoull(receipt.substr(0, dot));
        lease = std::stoull(receipt.substr(dot + 1));
      }
      if (!valid) {
        fail({400, "ReceiptHandleIsInvalid", "The receipt handle is not valid"});
        return;
      }
      self->request(st.config.queues, caf::infinite, complete_atom::value, account,
                    r.function_name, seq, lease)
        .then(
          [=](bool deleted) mutable {
            if (!deleted) {
              finish(self, rp, operation::delete_queue_message, start,
                     error_response({404, "ReceiptHandleIsInvalid",
                                     "The receipt handle has expired or the message is gone"}));
              return;
            }
            http_response res;
            res.status = 204;
            finish(self, rp, operation::delete_queue_message, start, std::move(res));
          },
          [=](caf::error& err) mutable {
            finish(self, rp, operation::delete_queue_message, start,
                   error_response(to_api_error(err)));
          });
      return;
    }
    case operation::health:
    case operation::metrics:
    case operation::download_code:
      break;
  }
  fail({500, "ServiceException", "Unhandled operation"});
  return;
}

// Exceptions would kill the actor in CAF 0.17; contain them here.
void handle_safely(self_ptr self, http_request& req, response_promise rp) {
  try {
    handle(self, req, rp);
  } catch (const std::exception& e) {
    config::logger("actors")->error("frontend failed on a request: {}", e.what());
    rp.deliver(error_response({500, "ServiceException", "Internal service error"}));
  }
}

} // namespace

frontend_actor::behavior_type frontend(self_ptr self, frontend_config cfg,
                                       registry_actor registry, counter_actor counter,
                                       assignment_actor assignment) {
  auto& st = self->state;
  st.config = std::move(cfg);
  st.counter = std::move(counter);
  st.assignment = std::move(assignment);
  if (st.config.download_key.empty())
    st.config.download_key = storage::random_bytes(32);
  st.invocations = st.config.invocations ? st.config.invocations
                                         : std::make_shared<invoke_metrics>();
  st.cache = st.config.cache ? st.config.cache : std::make_shared<metadata_cache>();
  st.registry = std::move(registry);
  for (const auto& a : st.config.accounts)
    st.by_access_key.emplace(a.access_key_id, a);
  self->send(st.registry, subscribe_atom::value,
             metadata_listener_actor{caf::actor_cast<frontend_actor>(self)});
  return {
    [=](invalidate_atom, const std::string& account, const std::string& name,
        const std::string&) {
      self->state.cache->erase(std::make_pair(account, name));
    },
    [=](http_request& req) -> caf::result<http_response> {
      auto promise = self->make_response_promise<http_response>();
      handle_safely(self, req, response_promise{promise});
      return promise;
    },
    [=](http_exchange& x) { handle_safely(self, x.request, response_promise{x.respond}); },
  };
}

frontend_actor spawn_frontend(caf::actor_system& sys, frontend_config cfg,
                              registry_actor registry, counter_actor counter,
                              assignment_actor assignment) {
  return sys.spawn(frontend, std::move(cfg), std::move(registry), std::move(counter),
                   std::move(assignment));
}

} // namespace nimbus
