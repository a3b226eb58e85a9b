#include "nimbus/actors/queue.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/config/logging.hpp"
#include "nimbus/storage/json.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <simdjson.h>

#include <algorithm>
#include <chrono>

namespace nimbus {

namespace {

using self_ptr = queue_actor::stateful_pointer<queue_state>;

/// Record types of the partition's log.
enum record_type : uint8_t { enqueue_record = 1, lease_record = 2, retry_record = 3,
                             done_record = 4 };

std::string encode_enqueue(const queued_event& e) {
  storage::json_writer w;
  w.begin_object()
    .key("request_id").value(e.request_id)
    .key("account").value(e.account_id)
    .key("function").value(e.function_name)
    .key("payload").value(e.payload)
    .key("enqueued_ms").value(e.enqueued_ms)
    .key("timeout_s").value(e.timeout_s);
  if (!e.attributes.empty()) {
    w.key("attributes").begin_object();
    for (const auto& [k, v] : e.attributes)
      w.key(k).value(v);
    w.end_object();
  }
  w.end_object();
  return w.take();
}

std::string encode_lease(const std::vector<queued_event>& leased) {
  storage::json_writer w;
  w.begin_array();
  for (const auto& e : leased)
    w.begin_object().key("seq").value(e.seq).key("attempts").value(e.attempts).end_object();
  w.end_array();
  return w.take();
}

std::string encode_retry(const queued_event& e, int64_t visible_at_ms) {
  storage::json_writer w;
  w.begin_object()
    .key("seq").value(e.seq)
    .key("attempts").value(e.attempts)
    .key("function_errors").value(e.function_errors)
    .key("system_retries").value(e.system_retries)
    .key("visible_at_ms").value(visible_at_ms)
    .end_object();
  return w.take();
}

std::string encode_done(uint64_t seq, const std::string& condition) {
  storage::json_writer w;
  w.begin_object().key("seq").value(seq).key("condition").value(condition).end_object();
  return w.take();
}

int64_t get_int(simdjson::dom::element e, const char* key) {
  int64_t v = 0;
  if (e[key].get(v))
    return 0;
  return v;
}

std::string get_string(simdjson::dom::element e, const char* key) {
  std::string_view v;
  if (e[key].get(v))
    return {};
  return std::string{v};
}

// Applies one recovered record to the partition's state. Returns an error
// text for a record that does not parse (the log verified its checksum, so
// this is a bug or a foreign file, not a torn write).
std::string replay(queue_state& st, const storage::log_record& r, simdjson::dom::parser& parser) {
  simdjson::dom::element doc;
  if (parser.parse(r.payload).get(doc))
    return "record " + std::to_string(r.seq) + " is not JSON";
  switch (r.type) {
    case enqueue_record: {
      queue_state::entry e;
      e.event.seq = r.seq;
      e.event.request_id = get_string(doc, "request_id");
      e.event.account_id = get_string(doc, "account");
      e.event.function_name = get_string(doc, "function");
      e.event.payload = get_string(doc, "payload");
      e.event.enqueued_ms = get_int(doc, "enqueued_ms");
      e.event.timeout_s = static_cast<int32_t>(get_int(doc, "timeout_s"));
      simdjson::dom::object attributes;
      if (!doc["attributes"].get(attributes))
        for (auto field : attributes) {
          std::string_view v;
          if (!field.value.get(v))
            e.event.attributes.emplace(std::string{field.key}, std::string{v});
        }
      st.events[r.seq] = std::move(e);
      return {};
    }
    case lease_record: {
      simdjson::dom::array items;
      if (doc.get(items))
        return "lease record " + std::to_string(r.seq) + " is not an array";
      for (auto item : items) {
        auto it = st.events.find(static_cast<uint64_t>(get_int(item, "seq")));
        if (it == st.events.end())
          continue;
        it->second.event.attempts = static_cast<uint32_t>(get_int(item, "attempts"));
        it->second.delivered_without_outcome = true;
      }
      return {};
    }
    case retry_record: {
      auto it = st.events.find(static_cast<uint64_t>(get_int(doc, "seq")));
      if (it == st.events.end())
        return {};
      auto& e = it->second;
      e.event.attempts = static_cast<uint32_t>(get_int(doc, "attempts"));
      e.event.function_errors = static_cast<uint32_t>(get_int(doc, "function_errors"));
      e.event.system_retries = static_cast<uint32_t>(get_int(doc, "system_retries"));
      e.visible_at_ms = get_int(doc, "visible_at_ms");
      e.delivered_without_outcome = false;
      return {};
    }
    case done_record:
      st.events.erase(static_cast<uint64_t>(get_int(doc, "seq")));
      return {};
    default:
      return "record " + std::to_string(r.seq) + " has unknown type "
             + std::to_string(static_cast<int>(r.type));
  }
}

// Appends a record; `committed` comes back to the actor once it is durable.
uint64_t append(self_ptr self, uint8_t type, std::string payload) {
  auto& st = self->state;
  auto token = st.next_token++;
  auto me = caf::actor_cast<queue_actor>(self);
  st.log->append(type, std::move(payload), [me, token](uint64_t seq, const std::string& error) {
    caf::anon_send(me, committed_atom::value, token, seq, error);
  });
  return token;
}

bool visible(const queue_state::entry& e, int64_t now) {
  return e.event.lease == 0 && e.visible_at_ms <= now;
}

// Leases up to `max` visible events (in memory; the caller records it).
std::vector<queued_event> pick(queue_state& st, uint32_t max) {
  auto now = st.config.now_ms();
  std::vector<queued_event> picked;
  for (auto& [seq, e] : st.events) {
    if (picked.size() >= max)
      break;
    if (!visible(e, now))
      continue;
    e.event.lease = st.next_lease++;
    ++e.event.attempts;
    e.event.redelivery = e.delivered_without_outcome;
    if (e.event.redelivery)
      ++st.counters.duplicates;
    e.delivered_without_outcome = true;
    auto margin = st.config.visibility_margin.count();
    e.lease_until_ms = now + int64_t{e.event.timeout_s} * 1000 + margin;
    ++st.counters.attempts;
    picked.push_back(e.event);
  }
  return picked;
}

// Records the lease durably, then answers with the leased events.
void hand_out(self_ptr self, std::vector<queued_event> picked,
              caf::typed_response_promise<std::vector<queued_event>> promise) {
  auto& st = self->state;
  auto token = append(self, lease_record, encode_lease(picked));
  auto& p = st.in_flight[token];
  p.leased = std::move(picked);
  p.lease_promise = std::move(promise);
}

// Hands visible events to waiting pollers.
void serve_waiters(self_ptr self) {
  auto& st = self->state;
  if (!st.failure.empty())
    return;
  while (!st.waiters.empty()) {
    auto picked = pick(st, st.waiters.front().max);
    if (picked.empty())
      return;
    auto promise = std::move(st.waiters.front().promise);
    st.waiters.pop_front();
    hand_out(self, std::move(picked), std::move(promise));
  }
}

// Checks that `seq` is leased under `lease`; counts a stale completion.
queue_state::entry* current(queue_state& st, uint64_t seq, uint64_t lease) {
  auto it = st.events.find(seq);
  if (it == st.events.end() || it->second.event.lease != lease || lease == 0) {
    ++st.counters.stale_completions;
    return nullptr;
  }
  return &it->second;
}

queue_stats snapshot(const queue_state& st) {
  auto s = st.counters;
  s.depth = st.events.size();
  s.leased = 0;
  int64_t oldest = 0;
  for (const auto& [_, e] : st.events) {
    if (e.event.lease != 0)
      ++s.leased;
    if (oldest == 0 || e.event.enqueued_ms < oldest)
      oldest = e.event.enqueued_ms;
  }
  s.oldest_age_ms = oldest == 0 ? 0 : std::max<int64_t>(0, st.config.now_ms() - oldest);
  s.waiting_pollers = st.waiters.size();
  return s;
}

} // namespace

queue_actor::behavior_type queue_partition(self_ptr self, queue_config cfg,
                                           std::shared_ptr<storage::durable_log> log,
                                           std::map<uint64_t, queue_state::entry> recovered) {
  auto& st = self->state;
  st.config = std::move(cfg);
  st.log = std::move(log);
  st.events = std::move(recovered);
  // Lease tokens must not repeat across restarts of the actor: start from the
  // clock.
  st.next_lease = static_cast<uint64_t>(st.config.now_ms()) << 16;
  self->delayed_send(self, st.config.tick, tick_atom::value);
  return {
    [=](enqueue_atom, queued_event& ev) -> caf::result<std::string> {
      auto& st = self->state;
      if (!st.failure.empty())
        return make_error(ec::storage_failure, "the event queue cannot store events: "
                                                     + st.failure);
      auto token = append(self, enqueue_record, encode_enqueue(ev));
      auto& p = st.in_flight[token];
      p.event = std::move(ev);
      p.enqueued = self->make_response_promise<std::string>();
      return p.enqueued;
    },
    [=](lease_atom, uint32_t max) -> caf::result<std::vector<queued_event>> {
      auto& st = self->state;
      if (!st.failure.empty())
        return make_error(ec::storage_failure, "the event queue failed: " + st.failure);
      auto rp = self->make_response_promise<std::vector<queued_event>>();
      st.waiters.push_back({std::max<uint32_t>(1, max), rp});
      serve_waiters(self);
      return rp;
    },
    [=](lease_atom, uint32_t max, bool) -> caf::result<std::vector<queued_event>> {
      auto& st = self->state;
      if (!st.failure.empty())
        return make_error(ec::storage_failure, "the event queue failed: " + st.failure);
      auto picked = pick(st, std::max<uint32_t>(1, max));
      if (picked.empty())
        return std::vector<queued_event>{};
      auto rp = self->make_response_promise<std::vector<queued_event>>();
      hand_out(self, std::move(picked), rp);
      return rp;
    },
    [=](complete_atom, uint64_t seq, uint64_t lease, std::string& condition) -> bool {
      auto& st = self->state;
      if (!current(st, seq, lease))
        return false;
      // The destination record (if any) is durable already; a DONE lost in a
      // crash only means the event runs again, counted as a redelivery.
      append(self, done_record, encode_done(seq, condition));
      st.events.erase(seq);
      ++st.counters.outcomes[condition];
      return true;
    },
    [=](retry_atom, queued_event& ev, int64_t visible_at_ms) -> bool {
      auto& st = self->state;
      auto* e = current(st, ev.seq, ev.lease);
      if (!e)
        return false;
      append(self, retry_record, encode_retry(ev, visible_at_ms));
      e->event.function_errors = ev.function_errors;
      e->event.system_retries = ev.system_retries;
      e->event.lease = 0;
      e->visible_at_ms = visible_at_ms;
      e->delivered_without_outcome = false;
      ++st.counters.retries;
      return true;
    },
    [=](stats_atom) -> queue_stats { return snapshot(self->state); },
    [=](committed_atom, uint64_t token, uint64_t seq, std::string& error) {
      auto& st = self->state;
      auto it = st.in_flight.find(token);
      if (!error.empty() && st.failure.empty()) {
        // Fail-stop: after a failed write or fsync nothing is
        // acknowledged any more; the node must be restarted to recover.
        st.failure = error;
        config::logger("actors")->critical("queue {} stopped accepting events: {}",
                                           st.config.dir, error);
        for (auto& w : st.waiters)
          w.promise.deliver(make_error(ec::storage_failure, "the event queue failed"));
        st.waiters.clear();
      }
      if (it == st.in_flight.end())
        return;
      auto p = std::move(it->second);
      st.in_flight.erase(it);
      if (p.enqueued.pending()) {
        if (!error.empty()) {
          p.enqueued.deliver(make_error(ec::storage_failure,
                                        "the event could not be stored: " + error));
          return;
        }
        queue_state::entry e;
        e.event = std::move(p.event);
        e.event.seq = seq;
        auto id = e.event.request_id;
        st.events[seq] = std::move(e);
        ++st.counters.accepted;
        p.enqueued.deliver(std::move(id));
        serve_waiters(self);
        return;
      }
      if (p.lease_promise.pending()) {
        if (!error.empty()) {
          p.lease_promise.deliver(make_error(ec::storage_failure, "the event queue failed"));
          return;
        }
        p.lease_promise.deliver(std::move(p.leased));
      }
    },
    [=](tick_atom) {
      auto& st = self->state;
      auto now = st.config.now_ms();
      for (auto& [_, e] : st.events)
        if (e.event.lease != 0 && e.lease_until_ms <= now) {
          // The poller did not finish in time (stalled or gone): the event
          // is delivered again; a late completion is rejected.
          config::logger("actors")->warn("queue lease of event {} expired; redelivering",
                                         e.event.request_id);
          e.event.lease = 0;
        }
      serve_waiters(self);
      // Everything below the oldest pending event is finished.
      auto low = st.events.empty() ? st.log->last_seq() + 1 : st.events.begin()->first;
      st.log->trim_before(low);
      self->delayed_send(self, st.config.tick, tick_atom::value);
    },
  };
}

std::optional<queue_actor> spawn_queue(caf::actor_system& sys, queue_config cfg,
                                       std::string& error) {
  if (!cfg.now_ms)
    cfg.now_ms = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
    };
  storage::durable_log_options o;
  o.dir = cfg.dir;
  o.segment_bytes = cfg.segment_bytes;
  o.fs = cfg.fs;
  storage::log_recovery recovered;
  auto log = storage::durable_log::open(o, recovered, error);
  if (!log)
    return std::nullopt;
  if (recovered.truncated_bytes > 0)
    config::logger("actors")->warn("queue {}: cut {} bytes of a torn write off the log", cfg.dir,
                                   recovered.truncated_bytes);
  queue_state replayed;
  simdjson::dom::parser parser;
  for (const auto& r : recovered.records)
    if (auto problem = replay(replayed, r, parser); !problem.empty()) {
      error = "queue " + cfg.dir + ": " + problem;
      return std::nullopt;
    }
  if (!replayed.events.empty())
    config::logger("actors")->info("queue {}: {} events pending after recovery", cfg.dir,
                                   replayed.events.size());
  return sys.spawn(queue_partition, std::move(cfg),
                   std::shared_ptr<storage::durable_log>{std::move(log)},
                   std::move(replayed.events));
}

} // namespace nimbus
