#pragma once

/// The COUNTER actor: how many invocations of an account and of each function
/// are in flight, against the limits (LAMBDA-API.md B.7):
///   - a function with reserved concurrency R runs at most R at once (R = 0
///     throttles every invoke): Reason ReservedFunctionConcurrentInvocationLimitExceeded;
///   - other functions share the account limit minus all reservations:
///     Reason ConcurrentInvocationLimitExceeded;
///   - new environments per function come from a token bucket refilled
///     continuously (AWS: 1,000 per 10 s) that does not accumulate beyond its
///     size: Reason FunctionInvocationRateLimitExceeded (or the Reserved* one).
/// Every lease must be released; leases are counted per account and function.

#include "nimbus/actors/interfaces.hpp"

#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>

namespace nimbus {

/// Settings of the counter.
struct counter_config {
  /// Concurrent executions per account.
  uint32_t account_limit = 1000;
  /// Capacity that must stay unreserved per account.
  uint32_t unreserved_minimum = 100;
  /// Size of a function's scale bucket (new environments in a burst).
  uint32_t scale_burst = 1000;
  /// Time in which an empty bucket refills completely.
  std::chrono::milliseconds scale_refill{10'000};
  /// Monotonic clock (injectable for tests).
  std::function<std::chrono::steady_clock::time_point()> now;
};

/// Checks a counter config; returns an error text or nothing.
std::string validate(const counter_config& cfg);

/// State of the COUNTER actor.
struct counter_state {
  static constexpr const char* name = "counter";
  using function_key = std::pair<std::string, std::string>;
  struct lease {
    std::string account;
    std::string function;
    bool reserved = false;
  };
  struct bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point refreshed;
  };
  counter_config config;
  uint64_t next_lease = 1;
  std::map<uint64_t, lease> leases;
  /// (account, function) -> reserved concurrency.
  std::map<function_key, int32_t> reserved;
  /// (account, function) -> in flight.
  std::map<function_key, uint32_t> function_in_flight;
  /// account -> in flight of functions without reservation.
  std::map<std::string, uint32_t> unreserved_in_flight;
  /// account -> total in flight.
  std::map<std::string, uint32_t> account_in_flight;
  std::map<function_key, bucket> buckets;
  std::map<std::string, uint64_t> throttles;
};

/// The COUNTER behavior; `reserved` are the reservations loaded at startup.
counter_actor::behavior_type counter(counter_actor::stateful_pointer<counter_state> self,
                                     counter_config cfg,
                                     std::map<std::pair<std::string, std::string>, int32_t> reserved);

/// Spawns the COUNTER.
counter_actor spawn_counter(caf::actor_system& sys, counter_config cfg,
                            std::map<std::pair<std::string, std::string>, int32_t> reserved);

} // namespace nimbus
