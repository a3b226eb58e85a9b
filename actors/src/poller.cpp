#include "nimbus/actors/poller.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/config/logging.hpp"
#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/json.hpp"
#include "nimbus/transport/lambda_api.hpp"
#include "nimbus/transport/lambda_codec.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <ctime>

namespace nimbus {

async_settings async_settings_of(const storage::function_record& r) {
  async_settings s;
  if (r.event_invoke) {
    const auto& c = *r.event_invoke;
    if (c.maximum_retry_attempts >= 0)
      s.maximum_retry_attempts = c.maximum_retry_attempts;
    if (c.maximum_event_age_seconds >= 0)
      s.maximum_event_age_seconds = c.maximum_event_age_seconds;
    s.on_success = c.on_success;
    s.on_failure = c.on_failure;
  }
  s.dead_letter = r.dead_letter_target;
  return s;
}

namespace {

using self_ptr = poller_actor::stateful_pointer<poller_state>;

std::string iso_time(int64_t unix_ms) {
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

void poll(self_ptr self);

// The event's run is over (done, retry scheduled, or given up on): go on.
void next(self_ptr self) {
  self->state.busy = false;
  if (self->state.retiring) {
    self->quit();
    return;
  }
  self->send(self, poll_atom::value);
}

// Marks the event done in its partition.
void complete(self_ptr self, const queued_event& ev, const std::string& condition) {
  self->request(self->state.config.queue, caf::infinite, complete_atom::value, ev.seq, ev.lease,
                condition)
    .then(
      [=](bool current) {
        if (!current)
          config::logger("actors")->warn("event {} finished after its lease expired (it was "
                                         "delivered again)",
                                         ev.request_id);
        next(self);
      },
      [=](caf::error&) { next(self); });
}

// Puts the event back until `visible_at_ms`.
void retry(self_ptr self, queued_event ev, int64_t visible_at_ms) {
  self->request(self->state.config.queue, caf::infinite, retry_atom::value, ev, visible_at_ms)
    .then([=](bool) { next(self); }, [=](caf::error&) { next(self); });
}

// Stores `body` durably at `destination` (a function: as its async event; a
// Nimbus queue: as a message), then runs `then`; on failure the event is
// kept and retried later (nothing accepted is dropped).
void deliver(self_ptr self, const queued_event& ev, const std::string& destination,
             std::string body, std::map<std::string, std::string> attributes,
             std::function<void()> then) {
  auto& cfg = self->state.config;
  auto failed = [=](const std::string& why) {
    auto& cfg = self->state.config;
    config::logger("actors")->error("event {}: destination {} failed ({}); will retry",
                                    ev.request_id, destination, why);
    auto later = ev;
    ++later.system_retries;
    retry(self, later, cfg.now_ms() + cfg.async.backoff_initial.count());
  };
  queued_event out;
  out.request_id = storage::request_uuid();
  out.payload = std::move(body);
  out.enqueued_ms = cfg.now_ms();
  out.timeout_s = ev.timeout_s;
  out.attributes = std::move(attributes);
  // The registry accepted only these forms, in the function's own account.
  auto target = transport::lambda::parse_delivery_target(destination);
  if (!target) {
    failed("not a function or queue ARN");
    return;
  }
  out.account_id = target->account_id;
  if (target->type == transport::lambda::delivery_target::kind::function) {
    out.function_name = target->name;
    self->request(cfg.manager, caf::infinite, enqueue_atom::value, std::move(out))
      .then([=](std::string&) { then(); },
            [=](caf::error& err) { failed(error_message(err)); });
    return;
  }
  self->request(cfg.manager, caf::infinite, send_atom::value, target->name, std::move(out))
    .then([=](std::string&) { then(); },
          [=](caf::error& err) { failed(error_message(err)); });
}

// The first 1 KB of an error payload's errorMessage (the DLQ attribute).
std::string error_message_of(const std::string& payload) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view message;
  std::string out = payload;
  if (!parser.parse(payload).get(doc) && !doc["errorMessage"].get(message))
    out = std::string{message};
  if (out.size() > 1024)
    out.resize(1024);
  return out;
}

// Finishes the event: the invocation record goes to the destination for
// `condition` (if one is configured), the original event to the dead-letter
// queue on failure (if one is configured), each durably, and then the event
// is done.
void finish(self_ptr self, const queued_event& ev, const async_settings& settings,
            const std::string& condition, bool invoked, bool function_error,
            const std::string& response) {
  auto& cfg = self->state.config;
  auto success = condition == "Success";
  auto destination = success ? settings.on_success : settings.on_failure;
  auto dead_letter = success ? std::string{} : settings.dead_letter;
  auto done = [=] { complete(self, ev, condition); };
  auto to_dead_letter = [=] {
    if (dead_letter.empty()) {
      done();
      return;
    }
    // AWS's DLQ message: the original event, with RequestID, ErrorCode and
    // ErrorMessage attributes.
    std::map<std::string, std::string> attributes{
      {"RequestID", ev.request_id},
      {"ErrorCode", invoked ? "200" : "429"},
      {"ErrorMessage", response.empty() ? condition : error_message_of(response)}};
    deliver(self, ev, dead_letter, ev.payload, std::move(attributes), done);
  };
  if (destination.empty()) {
    to_dead_letter();
    return;
  }
  auto arn = transport::lambda::function_arn(cfg.region, ev.account_id, ev.function_name)
             + ":$LATEST";
  auto record = invocation_record(ev, arn, condition, cfg.now_ms(), invoked, function_error,
                                  response);
  deliver(self, ev, destination, std::move(record), {}, to_dead_letter);
}

// A throttle or a system error: back off, unless the event is too old by the
// time it would run again.
void back_off(self_ptr self, queued_event ev, const async_settings& settings) {
  auto& cfg = self->state.config;
  auto shift = std::min<uint32_t>(ev.system_retries, 30);
  auto delay = std::min<int64_t>(cfg.async.backoff_initial.count() << shift,
                                 cfg.async.backoff_max.count());
  ++ev.system_retries;
  auto at = cfg.now_ms() + delay;
  if (at - ev.enqueued_ms > settings.maximum_event_age_seconds * 1000) {
    finish(self, ev, settings, "EventAgeExceeded", false, false, "");
    return;
  }
  retry(self, ev, at);
}

// Runs one event.
void run(self_ptr self, queued_event ev) {
  auto& cfg = self->state.config;
  self->request(cfg.registry, caf::infinite, get_atom::value, ev.account_id, ev.function_name)
    .then(
      [=](storage::function_record& rec) mutable {
        auto& cfg = self->state.config;
        auto settings = async_settings_of(rec);
        auto now = cfg.now_ms();
        if (now - ev.enqueued_ms > settings.maximum_event_age_seconds * 1000) {
          finish(self, ev, settings, "EventAgeExceeded", false, false, "");
          return;
        }
        if (rec.reserved_concurrency == 0) {
          // AWS: no retries when the function may not run at all.
          finish(self, ev, settings, "RetriesExhausted", false, false,
                 R"({"errorMessage":"The function's reserved concurrency is 0","errorType":)"
                 R"("TooManyRequestsException"})");
          return;
        }
        self->request(cfg.counter, caf::infinite, acquire_atom::value, ev.account_id, rec.name)
          .then(
            [=](uint64_t lease) mutable {
              auto& cfg = self->state.config;
              invoke_order order;
              order.function = std::make_shared<const storage::function_record>(rec);
              order.request.request_id = ev.request_id;
              order.request.payload = ev.payload;
              order.request.trace_id = "Root=1-" + storage::request_hex(4) + "-"
                                       + storage::request_hex(12) + ";Sampled=0";
              self->request(cfg.assignment, caf::infinite, invoke_atom::value, std::move(order))
                .then(
                  [=](invoke_outcome& o) mutable {
                    auto& cfg = self->state.config;
                    self->send(cfg.counter, release_atom::value, lease);
                    if (cfg.logs)
                      cfg.logs->append(ev.account_id, ev.function_name, o.result.log, true);
                    if (o.result.outcome == "success") {
                      finish(self, ev, settings, "Success", true, false, o.result.payload);
                      return;
                    }
                    // A function error (also a timeout, crash or OOM).
                    ++ev.function_errors;
                    if (static_cast<int32_t>(ev.function_errors)
                        > settings.maximum_retry_attempts) {
                      finish(self, ev, settings, "RetriesExhausted", true, true,
                             o.result.payload);
                      return;
                    }
                    auto delay = ev.function_errors == 1 ? cfg.async.retry_delay_first
                                                         : cfg.async.retry_delay_second;
                    retry(self, ev, cfg.now_ms() + delay.count());
                  },
                  [=](caf::error& err) mutable {
                    auto& cfg = self->state.config;
                    self->send(cfg.counter, release_atom::value, lease);
                    if (err == ec::init_failed) {
                      // A failed INIT is a function error of this attempt.
                      if (cfg.logs)
                        cfg.logs->append(ev.account_id, ev.function_name,
                                         "INIT_REPORT Status: error\n" + error_message(err)
                                           + "\n",
                                         true);
                      ++ev.function_errors;
                      if (static_cast<int32_t>(ev.function_errors)
                          > settings.maximum_retry_attempts) {
                        finish(self, ev, settings, "RetriesExhausted", true, true,
                               error_message(err));
                        return;
                      }
                      auto delay = ev.function_errors == 1 ? cfg.async.retry_delay_first
                                                           : cfg.async.retry_delay_second;
                      retry(self, ev, cfg.now_ms() + delay.count());
                      return;
                    }
                    back_off(self, ev, settings);
                  });
            },
            [=](caf::error&) mutable {
              // Throttled (account or reserved concurrency, or scale rate).
              back_off(self, ev, settings);
            });
      },
      [=](caf::error& err) {
        if (err == ec::resource_not_found) {
          // The function is gone: its events go with it.
          config::logger("actors")->info("event {} dropped: function {} was deleted",
                                         ev.request_id, ev.function_name);
          complete(self, ev, "FunctionDeleted");
          return;
        }
        back_off(self, ev, async_settings{});
      });
}

void poll(self_ptr self) {
  auto& st = self->state;
  if (st.busy || st.retiring) {
    if (st.retiring && !st.busy)
      self->quit();
    return;
  }
  st.busy = true;
  self->request(st.config.queue, caf::infinite, lease_atom::value, uint32_t{1})
    .then(
      [=](std::vector<queued_event>& events) {
        if (events.empty()) {
          next(self);
          return;
        }
        run(self, std::move(events.front()));
      },
      [=](caf::error& err) {
        // The queue failed (fail-stop): stop polling it.
        config::logger("actors")->error("poller stops: {}", error_message(err));
        self->quit();
      });
}

} // namespace

std::string invocation_record(const queued_event& ev, const std::string& function_arn,
                              const std::string& condition, int64_t now_ms, bool invoked,
                              bool function_error, const std::string& response_payload) {
  storage::json_writer w;
  w.begin_object()
    .key("version").value("1.0")
    .key("timestamp").value(iso_time(now_ms))
    .key("requestContext").begin_object()
      .key("requestId").value(ev.request_id)
      .key("functionArn").value(function_arn)
      .key("condition").value(condition)
      .key("approximateInvokeCount").value(ev.attempts)
    .end_object()
    .key("requestPayload").raw(ev.payload.empty() ? "{}" : ev.payload);
  if (invoked) {
    w.key("responseContext").begin_object()
      .key("statusCode").value(int32_t{200})
      .key("executedVersion").value("$LATEST");
    if (function_error)
      w.key("functionError").value("Unhandled");
    w.end_object();
    if (!response_payload.empty()) {
      // A function may answer with something that is not JSON: then it goes
      // in as a string.
      simdjson::dom::parser parser;
      simdjson::dom::element doc;
      if (parser.parse(response_payload).get(doc))
        w.key("responsePayload").value(response_payload);
      else
        w.key("responsePayload").raw(response_payload);
    }
  }
  w.end_object();
  return w.take();
}

poller_actor::behavior_type poller(self_ptr self, poller_config cfg) {
  self->state.config = std::move(cfg);
  self->send(self, poll_atom::value);
  return {
    [=](poll_atom) { poll(self); },
    [=](retire_atom) {
      self->state.retiring = true;
      if (!self->state.busy)
        self->quit();
    },
  };
}

poller_actor spawn_poller(caf::actor_system& sys, poller_config cfg) {
  if (!cfg.now_ms)
    cfg.now_ms = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
    };
  return sys.spawn(poller, std::move(cfg));
}

} // namespace nimbus
