#include "nimbus/actors/counter.hpp"

#include "nimbus/actors/error.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace nimbus {

std::string validate(const counter_config& cfg) {
  if (!cfg.now)
    return "counter: clock missing";
  if (cfg.unreserved_minimum > cfg.account_limit)
    return "counter: the unreserved minimum exceeds the account limit";
  if (cfg.scale_burst == 0 || cfg.scale_refill.count() <= 0)
    return "counter: the scale rate must be positive";
  return {};
}

namespace {

using self_ptr = counter_actor::stateful_pointer<counter_state>;

uint32_t reserved_total(const counter_state& st, const std::string& account) {
  uint64_t total = 0;
  for (auto it = st.reserved.lower_bound({account, ""});
       it != st.reserved.end() && it->first.first == account; ++it)
    total += static_cast<uint64_t>(std::max(0, it->second));
  return static_cast<uint32_t>(std::min<uint64_t>(total, UINT32_MAX));
}

uint32_t unreserved_limit(const counter_state& st, const std::string& account) {
  auto reserved = reserved_total(st, account);
  return reserved >= st.config.account_limit ? 0 : st.config.account_limit - reserved;
}

caf::error throttle(self_ptr self, const std::string& account, const char* reason) {
  ++self->state.throttles[account];
  return make_error(ec::throttled, reason);
}

} // namespace

counter_actor::behavior_type counter(self_ptr self, counter_config cfg,
                                     std::map<std::pair<std::string, std::string>, int32_t> reserved) {
  self->state.config = std::move(cfg);
  self->state.reserved = std::move(reserved);
  return {
    [=](acquire_atom, const std::string& account,
        const std::string& function) -> caf::result<uint64_t> {
      auto& st = self->state;
      counter_state::function_key key{account, function};
      auto r = st.reserved.find(key);
      bool has_reservation = r != st.reserved.end() && r->second >= 0;
      if (has_reservation) {
        if (st.function_in_flight[key] >= static_cast<uint32_t>(r->second))
          return throttle(self, account, "ReservedFunctionConcurrentInvocationLimitExceeded");
      } else if (st.unreserved_in_flight[account] >= unreserved_limit(st, account)) {
        return throttle(self, account, "ConcurrentInvocationLimitExceeded");
      }
      auto id = st.next_lease++;
      st.leases.emplace(id, counter_state::lease{account, function, has_reservation});
      ++st.function_in_flight[key];
      ++st.account_in_flight[account];
      if (!has_reservation)
        ++st.unreserved_in_flight[account];
      return id;
    },
    [=](release_atom, uint64_t id) {
      auto& st = self->state;
      auto it = st.leases.find(id);
      if (it == st.leases.end())
        return;
      auto& l = it->second;
      counter_state::function_key key{l.account, l.function};
      if (--st.function_in_flight[key] == 0)
        st.function_in_flight.erase(key);
      --st.account_in_flight[l.account];
      if (!l.reserved)
        --st.unreserved_in_flight[l.account];
      st.leases.erase(it);
    },
    [=](scale_atom, const std::string& account,
        const std::string& function) -> caf::result<bool> {
      auto& st = self->state;
      counter_state::function_key key{account, function};
      auto now = st.config.now();
      auto [it, fresh] = st.buckets.try_emplace(key);
      auto& b = it->second;
      double burst = st.config.scale_burst;
      if (fresh) {
        b.tokens = burst;
      } else {
        // Continuous refill, capped at the bucket size: unused capacity does
        // not accumulate.
        auto elapsed = std::chrono::duration<double, std::milli>(now - b.refreshed).count();
        b.tokens = std::min(burst, b.tokens + elapsed * burst / st.config.scale_refill.count());
      }
      b.refreshed = now;
      if (b.tokens < 1.0) {
        auto r = st.reserved.find(key);
        bool reserved = r != st.reserved.end() && r->second >= 0;
        return throttle(self, account,
                        reserved ? "ReservedFunctionInvocationRateLimitExceeded"
                                 : "FunctionInvocationRateLimitExceeded");
      }
      b.tokens -= 1.0;
      return true;
    },
    [=](reserve_atom, const std::string& account, const std::string& function, int32_t value) {
      auto& st = self->state;
      counter_state::function_key key{account, function};
      // Leases already out keep the pool they were counted in.
      if (value < 0)
        st.reserved.erase(key);
      else
        st.reserved[key] = value;
    },
    [=](stats_atom, const std::string& account) -> counter_stats {
      auto& st = self->state;
      counter_stats s;
      auto it = st.account_in_flight.find(account);
      s.in_flight = it == st.account_in_flight.end() ? 0 : it->second;
      s.account_limit = st.config.account_limit;
      s.unreserved_limit = unreserved_limit(st, account);
      auto t = st.throttles.find(account);
      s.throttles = t == st.throttles.end() ? 0 : t->second;
      return s;
    },
  };
}

counter_actor spawn_counter(caf::actor_system& sys, counter_config cfg,
                            std::map<std::pair<std::string, std::string>, int32_t> reserved) {
  return sys.spawn(counter, std::move(cfg), std::move(reserved));
}

} // namespace nimbus
