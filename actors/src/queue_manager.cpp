#include "nimbus/actors/queue_manager.hpp"

#include "nimbus/actors/error.hpp"
#include "nimbus/actors/poller.hpp"
#include "nimbus/config/logging.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <cctype>
#include <functional>

namespace nimbus {

size_t partition_of(const std::string& account, const std::string& function, size_t n) {
  // FNV-1a: stable across processes and builds (std::hash is not promised
  // to be), so a function's events stay in one partition after a restart.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const std::string& s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
    h ^= '/';
    h *= 1099511628211ull;
  };
  mix(account);
  mix(function);
  return n == 0 ? 0 : static_cast<size_t>(h % n);
}

bool valid_queue_name(const std::string& name) {
  if (name.empty() || name.size() > 80)
    return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_')
      return false;
  return true;
}

namespace {

using self_ptr = queue_manager_actor::stateful_pointer<queue_manager_state>;

// The message queue (account, name), opened on first use. Its directory
// name comes from checked parts only (12 digits, [A-Za-z0-9_-]).
std::optional<queue_actor> message_queue(self_ptr self, const std::string& account,
                                         const std::string& name, std::string& error) {
  auto& st = self->state;
  bool digits = account.size() == 12
                && std::all_of(account.begin(), account.end(),
                               [](char c) { return c >= '0' && c <= '9'; });
  if (!digits || !valid_queue_name(name)) {
    error = "invalid queue name";
    return std::nullopt;
  }
  auto key = std::make_pair(account, name);
  if (auto it = st.message_queues.find(key); it != st.message_queues.end())
    return it->second;
  queue_config qc;
  auto base = st.config.mq_dir.empty() ? st.config.dir + "/../message-queues" : st.config.mq_dir;
  qc.dir = base + "/" + account + "/" + name;
  qc.segment_bytes = st.config.async.segment_bytes;
  // A received message stays invisible for 30 s (SQS's default) unless it
  // is deleted: the lease is timeout_s (0 for messages) plus this margin.
  qc.visibility_margin = std::chrono::seconds{30};
  qc.tick = st.config.async.tick;
  qc.now_ms = st.config.now_ms;
  qc.fs = st.config.fs;
  auto q = spawn_queue(self->system(), std::move(qc), error);
  if (!q)
    return std::nullopt;
  self->link_to(*q);
  st.message_queues.emplace(key, *q);
  return q;
}

poller_actor add_poller(self_ptr self, queue_manager_state::partition& p) {
  auto& cfg = self->state.config;
  poller_config pc;
  pc.region = cfg.region;
  pc.async = cfg.async;
  pc.now_ms = cfg.now_ms;
  pc.queue = p.queue;
  pc.manager = caf::actor_cast<queue_manager_actor>(self);
  pc.registry = cfg.registry;
  pc.counter = cfg.counter;
  pc.assignment = cfg.assignment;
  pc.logs = cfg.logs;
  auto poller = spawn_poller(self->system(), std::move(pc));
  self->link_to(poller);
  p.pollers.push_back(poller);
  return poller;
}

} // namespace

queue_manager_actor::behavior_type
queue_manager(self_ptr self, queue_manager_config cfg, std::vector<queue_actor> queues) {
  auto& st = self->state;
  st.config = std::move(cfg);
  // Pollers end with the manager (links); a poller that retires ends
  // normally, which does not take the manager down.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    if (msg.reason == caf::exit_reason::normal) {
      for (auto& p : self->state.partitions)
        p.pollers.erase(std::remove_if(p.pollers.begin(), p.pollers.end(),
                                       [&](const poller_actor& a) {
                                         return a.address() == msg.source;
                                       }),
                        p.pollers.end());
      return;
    }
    self->quit(msg.reason);
  });
  for (auto& q : queues) {
    queue_manager_state::partition p;
    p.queue = q;
    self->link_to(q);
    st.partitions.push_back(std::move(p));
    for (uint32_t i = 0; i < st.config.async.pollers_min; ++i)
      add_poller(self, st.partitions.back());
  }
  self->delayed_send(self, st.config.async.tick, tick_atom::value);
  return {
    [=](enqueue_atom, queued_event& ev) -> caf::result<std::string> {
      auto& st = self->state;
      auto& p = st.partitions[partition_of(ev.account_id, ev.function_name,
                                           st.partitions.size())];
      return self->delegate(p.queue, enqueue_atom::value, std::move(ev));
    },
    [=](stats_atom) -> caf::result<queue_stats, uint32_t> {
      auto& st = self->state;
      auto rp = self->make_response_promise<queue_stats, uint32_t>();
      auto total = std::make_shared<queue_stats>();
      auto left = std::make_shared<size_t>(st.partitions.size());
      uint32_t pollers = 0;
      for (auto& p : st.partitions)
        pollers += static_cast<uint32_t>(p.pollers.size());
      for (auto& p : st.partitions)
        self->request(p.queue, std::chrono::seconds{5}, stats_atom::value)
          .then(
            [=](queue_stats& s) mutable {
              total->depth += s.depth;
              total->leased += s.leased;
              total->oldest_age_ms = std::max(total->oldest_age_ms, s.oldest_age_ms);
              total->waiting_pollers += s.waiting_pollers;
              total->accepted += s.accepted;
              total->attempts += s.attempts;
              total->retries += s.retries;
              total->duplicates += s.duplicates;
              total->stale_completions += s.stale_completions;
              for (auto& [k, v] : s.outcomes)
                total->outcomes[k] += v;
              if (--*left == 0)
                rp.deliver(*total, pollers);
            },
            [=](caf::error&) mutable {
              if (--*left == 0)
                rp.deliver(*total, pollers);
            });
      if (st.partitions.empty())
        rp.deliver(queue_stats{}, uint32_t{0});
      return rp;
    },
    [=](send_atom, const std::string& queue, queued_event& message)
      -> caf::result<std::string> {
      std::string error;
      auto q = message_queue(self, message.account_id, queue, error);
      if (!q)
        return make_error(ec::invalid_parameter, "queue " + queue + ": " + error);
      message.timeout_s = 0;
      return self->delegate(*q, enqueue_atom::value, std::move(message));
    },
    [=](receive_atom, const std::string& account, const std::string& queue,
        uint32_t max) -> caf::result<std::vector<queued_event>> {
      std::string error;
      auto q = message_queue(self, account, queue, error);
      if (!q)
        return make_error(ec::resource_not_found, "queue " + queue + ": " + error);
      return self->delegate(*q, lease_atom::value, std::clamp<uint32_t>(max, 1, 10), false);
    },
    [=](complete_atom, const std::string& account, const std::string& queue, uint64_t seq,
        uint64_t lease) -> caf::result<bool> {
      std::string error;
      auto q = message_queue(self, account, queue, error);
      if (!q)
        return make_error(ec::resource_not_found, "queue " + queue + ": " + error);
      return self->delegate(*q, complete_atom::value, seq, lease, std::string{"Deleted"});
    },
    [=](tick_atom) {
      auto& st = self->state;
      for (size_t i = 0; i < st.partitions.size(); ++i)
        self->request(st.partitions[i].queue, std::chrono::seconds{5}, stats_atom::value)
          .then(
            [=](queue_stats& s) {
              auto& st = self->state;
              auto& p = st.partitions[i];
              auto waiting_events = s.depth - s.leased;
              auto& a = st.config.async;
              if (waiting_events > 0 && s.waiting_pollers == 0 && p.pollers.size() < a.pollers_max)
                add_poller(self, p);
              else if (waiting_events == 0 && s.waiting_pollers > 1
                       && p.pollers.size() > a.pollers_min) {
                // Retired pollers finish their current event first.
                self->send(p.pollers.back(), retire_atom::value);
                p.pollers.pop_back();
              }
            },
            [](caf::error&) {});
      self->delayed_send(self, st.config.async.tick, tick_atom::value);
    },
  };
}

std::optional<queue_manager_actor> spawn_queue_manager(caf::actor_system& sys,
                                                       queue_manager_config cfg,
                                                       std::string& error) {
  if (!cfg.now_ms)
    cfg.now_ms = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
    };
  std::vector<queue_actor> queues;
  for (uint32_t i = 0; i < cfg.async.partitions; ++i) {
    queue_config qc;
    qc.dir = cfg.dir + "/p" + std::to_string(i);
    qc.segment_bytes = cfg.async.segment_bytes;
    qc.visibility_margin = cfg.async.visibility_margin;
    qc.tick = cfg.async.tick;
    qc.now_ms = cfg.now_ms;
    qc.fs = cfg.fs;
    auto q = spawn_queue(sys, std::move(qc), error);
    if (!q) {
      for (auto& other : queues)
        caf::anon_send_exit(other, caf::exit_reason::user_shutdown);
      return std::nullopt;
    }
    queues.push_back(*q);
  }
  return sys.spawn(queue_manager, std::move(cfg), std::move(queues));
}

} // namespace nimbus
