// COUNTER: concurrency leases per account and function, reserved
// concurrency, the unreserved pool and the scale-rate token bucket, driven on
// the deterministic test coordinator with an injected clock.

#include "nimbus/actors/counter.hpp"
#include "nimbus/actors/error.hpp"

#include "fixture.hpp"

#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace nimbus;
using namespace std::chrono_literals;

namespace {

constexpr const char* account_a = "111111111111";
constexpr const char* account_b = "222222222222";

constexpr const char* unreserved_reason = "ConcurrentInvocationLimitExceeded";
constexpr const char* reserved_reason = "ReservedFunctionConcurrentInvocationLimitExceeded";
constexpr const char* rate_reason = "FunctionInvocationRateLimitExceeded";
constexpr const char* reserved_rate_reason = "ReservedFunctionInvocationRateLimitExceeded";

using reservations = std::map<std::pair<std::string, std::string>, int32_t>;

struct counter_fixture : test::actor_fixture {
  std::shared_ptr<std::chrono::steady_clock::time_point> clock
    = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::hours{1000});
  counter_actor counter;

  ~counter_fixture() {
    if (counter)
      stop(counter);
  }

  void start(uint32_t account_limit, reservations reserved = {}, uint32_t burst = 1000,
             std::chrono::milliseconds refill = 10'000ms) {
    if (counter)
      stop(counter);
    counter_config cfg;
    cfg.account_limit = account_limit;
    cfg.unreserved_minimum = 0;
    cfg.scale_burst = burst;
    cfg.scale_refill = refill;
    auto c = clock;
    cfg.now = [c] { return *c; };
    REQUIRE(validate(cfg).empty());
    counter = spawn_counter(sys, cfg, std::move(reserved));
    sched.run();
  }

  caf::expected<uint64_t> acquire(const std::string& account, const std::string& function) {
    return request<uint64_t>(counter, acquire_atom::value, account, function);
  }

  void release(uint64_t lease) {
    self->send(counter, release_atom::value, lease);
    sched.run();
  }

  void reserve(const std::string& account, const std::string& function, int32_t value) {
    self->send(counter, reserve_atom::value, account, function, value);
    sched.run();
  }

  caf::expected<bool> scale(const std::string& account, const std::string& function) {
    return request<bool>(counter, scale_atom::value, account, function);
  }

  counter_stats stats(const std::string& account) {
    auto s = request<counter_stats>(counter, stats_atom::value, account);
    REQUIRE(s);
    return *s;
  }

  /// Takes `n` leases that must all be granted.
  std::vector<uint64_t> take(const std::string& account, const std::string& function, int n) {
    std::vector<uint64_t> out;
    for (int i = 0; i < n; ++i) {
      auto lease = acquire(account, function);
      REQUIRE_MESSAGE(lease, "lease ", i, " of ", function, ": ", to_string(lease.error()));
      out.push_back(*lease);
    }
    return out;
  }
};

/// True if `r` failed with ec::throttled and the given AWS Reason.
template <class T>
bool throttled_with(const caf::expected<T>& r, const std::string& reason) {
  return !r && r.error() == ec::throttled && error_message(r.error()) == reason;
}

} // namespace

TEST_CASE_FIXTURE(counter_fixture, "counter: the unreserved pool admits the account limit") {
  start(10);
  std::vector<uint64_t> leases;
  for (int i = 0; i < 10; ++i) {
    auto lease = acquire(account_a, "fn" + std::to_string(i % 3));
    REQUIRE(lease);
    leases.push_back(*lease);
  }
  auto eleventh = acquire(account_a, "fn0");
  REQUIRE_FALSE(eleventh);
  CHECK(eleventh.error() == ec::throttled);
  CHECK(error_message(eleventh.error()) == unreserved_reason);
  // A function not seen before shares the same exhausted pool.
  CHECK(throttled_with(acquire(account_a, "fresh"), unreserved_reason));
  // Releasing one lets exactly one more in.
  release(leases.front());
  CHECK(acquire(account_a, "fresh"));
  CHECK(throttled_with(acquire(account_a, "fresh"), unreserved_reason));
}

TEST_CASE_FIXTURE(counter_fixture, "counter: a reserved function runs at most R at once") {
  start(10, {{{account_a, "f"}, 2}});
  auto held = take(account_a, "f", 2);
  auto third = acquire(account_a, "f");
  REQUIRE_FALSE(third);
  CHECK(third.error() == ec::throttled);
  CHECK(error_message(third.error()) == reserved_reason);
  // Other functions still get leases from the unreserved pool (10 - 2 = 8).
  take(account_a, "g", 8);
  CHECK(throttled_with(acquire(account_a, "g"), unreserved_reason));
  // The reserved function is unaffected by the full pool, and its own
  // release makes room for exactly one.
  release(held[0]);
  CHECK(acquire(account_a, "f"));
  CHECK(throttled_with(acquire(account_a, "f"), reserved_reason));
}

TEST_CASE_FIXTURE(counter_fixture, "counter: a reservation of zero throttles every invoke") {
  start(10, {{{account_a, "off"}, 0}});
  for (int i = 0; i < 3; ++i)
    CHECK(throttled_with(acquire(account_a, "off"), reserved_reason));
  CHECK(acquire(account_a, "on"));
  // Zero reserves nothing: the unreserved pool keeps all 10.
  CHECK(stats(account_a).unreserved_limit == 10);
  CHECK(stats(account_a).throttles == 3);
}

TEST_CASE_FIXTURE(counter_fixture, "counter: reservations shrink the unreserved pool") {
  start(10);
  reserve(account_a, "f", 4);
  CHECK(stats(account_a).unreserved_limit == 6);
  take(account_a, "g", 3);
  take(account_a, "h", 3);
  CHECK(throttled_with(acquire(account_a, "g"), unreserved_reason));
  CHECK(throttled_with(acquire(account_a, "other"), unreserved_reason));
  // f still has all of its 4.
  take(account_a, "f", 4);
  CHECK(throttled_with(acquire(account_a, "f"), reserved_reason));
  auto s = stats(account_a);
  CHECK(s.in_flight == 10);
  CHECK(s.account_limit == 10);
  CHECK(s.unreserved_limit == 6);
}

TEST_CASE_FIXTURE(counter_fixture, "counter: reserve with -1 removes a reservation") {
  start(10, {{{account_a, "f"}, 1}});
  CHECK(stats(account_a).unreserved_limit == 9);
  auto reserved_lease = take(account_a, "f", 1);
  CHECK(throttled_with(acquire(account_a, "f"), reserved_reason));
  reserve(account_a, "f", -1);
  CHECK(stats(account_a).unreserved_limit == 10);
  // f now draws from the unreserved pool; the lease taken under the
  // reservation keeps its pool, so the unreserved pool has all 10.
  take(account_a, "f", 10);
  CHECK(throttled_with(acquire(account_a, "f"), unreserved_reason));
  CHECK(stats(account_a).in_flight == 11);
  release(reserved_lease[0]);
  CHECK(stats(account_a).in_flight == 10);
  // Releasing the reserved lease did not free an unreserved slot.
  CHECK(throttled_with(acquire(account_a, "f"), unreserved_reason));
}

TEST_CASE_FIXTURE(counter_fixture, "counter: releasing an unknown lease is harmless") {
  start(3);
  auto held = take(account_a, "f", 3);
  release(987654321);
  release(0);
  CHECK(stats(account_a).in_flight == 3);
  CHECK(throttled_with(acquire(account_a, "f"), unreserved_reason));
  // A lease released twice frees one slot, not two.
  release(held[0]);
  release(held[0]);
  CHECK(stats(account_a).in_flight == 2);
  CHECK(acquire(account_a, "f"));
  CHECK(throttled_with(acquire(account_a, "f"), unreserved_reason));
}

TEST_CASE_FIXTURE(counter_fixture, "counter: leases are counted per account") {
  start(10, {{{account_a, "f"}, 2}});
  take(account_a, "g", 8);
  CHECK(throttled_with(acquire(account_a, "g"), unreserved_reason));
  // Account B has its own pool of 10, and A's reservation does not apply to
  // B's function of the same name.
  take(account_b, "g", 5);
  take(account_b, "f", 5);
  CHECK(throttled_with(acquire(account_b, "f"), unreserved_reason));
  take(account_a, "f", 2);
  auto a = stats(account_a);
  auto b = stats(account_b);
  CHECK(a.in_flight == 10);
  CHECK(a.unreserved_limit == 8);
  CHECK(a.throttles == 1);
  CHECK(b.in_flight == 10);
  CHECK(b.unreserved_limit == 10);
  CHECK(b.throttles == 1);
}

TEST_CASE_FIXTURE(counter_fixture, "counter: stats report in-flight, limits and throttles") {
  start(5, {{{account_a, "f"}, 1}});
  auto empty = stats(account_b);
  CHECK(empty.in_flight == 0);
  CHECK(empty.account_limit == 5);
  CHECK(empty.unreserved_limit == 5);
  CHECK(empty.throttles == 0);
  auto g = take(account_a, "g", 4);
  take(account_a, "f", 1);
  CHECK_FALSE(acquire(account_a, "g"));
  CHECK_FALSE(acquire(account_a, "f"));
  auto s = stats(account_a);
  CHECK(s.in_flight == 5);
  CHECK(s.account_limit == 5);
  CHECK(s.unreserved_limit == 4);
  CHECK(s.throttles == 2);
  release(g[1]);
  CHECK(stats(account_a).in_flight == 4);
  // Scale throttles count too (a fresh counter).
  start(5, {}, 1, 1000ms);
  CHECK(scale(account_a, "g"));
  CHECK_FALSE(scale(account_a, "g"));
  CHECK(stats(account_a).throttles == 1);
}

TEST_CASE_FIXTURE(counter_fixture, "counter: the scale bucket refills continuously up to its size") {
  start(100, {}, 3, 1000ms);
  for (int i = 0; i < 3; ++i)
    CHECK(scale(account_a, "f"));
  auto fourth = scale(account_a, "f");
  REQUIRE_FALSE(fourth);
  CHECK(fourth.error() == ec::throttled);
  CHECK(error_message(fourth.error()) == rate_reason);
  // Another function (and another account) has its own full bucket.
  CHECK(scale(account_a, "g"));
  CHECK(scale(account_b, "f"));
  // 500 ms refill 1.5 tokens: one more, then 0.5 left.
  *clock += 500ms;
  CHECK(scale(account_a, "f"));
  CHECK(throttled_with(scale(account_a, "f"), rate_reason));
  // The half token carries over: 200 ms more (0.6) makes a whole one.
  *clock += 200ms;
  CHECK(scale(account_a, "f"));
  CHECK(throttled_with(scale(account_a, "f"), rate_reason));
  // A long pause fills the bucket, but never beyond its size.
  *clock += 1h;
  for (int i = 0; i < 3; ++i)
    CHECK(scale(account_a, "f"));
  CHECK(throttled_with(scale(account_a, "f"), rate_reason));
}

TEST_CASE_FIXTURE(counter_fixture, "counter: a reserved function's scale throttle names the reservation") {
  start(100, {{{account_a, "f"}, 10}}, 3, 1000ms);
  for (int i = 0; i < 3; ++i)
    CHECK(scale(account_a, "f"));
  CHECK(throttled_with(scale(account_a, "f"), reserved_rate_reason));
  CHECK(throttled_with(scale(account_a, "f"), reserved_rate_reason));
  reserve(account_a, "f", -1);
  CHECK(throttled_with(scale(account_a, "f"), rate_reason));
  // The throttled attempts took nothing: 1000/3 ms later there is one token.
  *clock += 334ms;
  CHECK(scale(account_a, "f"));
}

// LAM-7: whatever the order of invokes and completions, a function with
// reserved concurrency R never has more than R in flight, the others never
// exceed the unreserved pool, and every throttle names the limit that was hit.
TEST_CASE_FIXTURE(counter_fixture, "counter: random acquire and release keep every limit") {
  constexpr uint32_t limit = 10;
  constexpr uint32_t reserved = 3;
  start(limit, {{{account_a, "f"}, int32_t{reserved}}, {{account_a, "z"}, 0}});
  const std::vector<std::string> functions{"f", "g", "h", "z"};
  std::map<std::string, std::vector<uint64_t>> held;
  std::mt19937 rng{20240611};
  std::uniform_int_distribution<int> pick_function(0, static_cast<int>(functions.size()) - 1);
  std::bernoulli_distribution do_acquire(0.6);
  uint32_t max_f = 0;
  uint64_t throttles = 0;
  uint64_t reserved_throttles = 0;
  uint64_t f_throttles = 0;
  uint64_t granted = 0;
  for (int step = 0; step < 3000; ++step) {
    const auto& fn = functions[pick_function(rng)];
    auto& mine = held[fn];
    if (do_acquire(rng) || mine.empty()) {
      auto unreserved_held = held["g"].size() + held["h"].size();
      bool is_reserved = fn == "f" || fn == "z";
      auto lease = acquire(account_a, fn);
      if (lease) {
        ++granted;
        mine.push_back(*lease);
        // The model agrees that there was room.
        if (is_reserved)
          CHECK(mine.size() <= (fn == "f" ? reserved : 0u));
        else
          CHECK(unreserved_held + 1 <= limit - reserved);
      } else {
        ++throttles;
        REQUIRE(lease.error() == ec::throttled);
        auto reason = error_message(lease.error());
        if (is_reserved) {
          ++reserved_throttles;
          f_throttles += fn == "f" ? 1 : 0;
          CHECK(reason == reserved_reason);
          CHECK(mine.size() == (fn == "f" ? reserved : 0u));
        } else {
          CHECK(reason == unreserved_reason);
          CHECK(unreserved_held == limit - reserved);
        }
      }
    } else {
      std::uniform_int_distribution<size_t> pick(0, mine.size() - 1);
      auto i = pick(rng);
      release(mine[i]);
      mine.erase(mine.begin() + static_cast<std::ptrdiff_t>(i));
    }
    max_f = std::max(max_f, static_cast<uint32_t>(held["f"].size()));
    REQUIRE(held["f"].size() <= reserved);
    if (step % 100 == 0) {
      uint32_t total = 0;
      for (auto& [name, leases] : held)
        total += static_cast<uint32_t>(leases.size());
      REQUIRE(stats(account_a).in_flight == total);
    }
  }
  // The sequence really exercised both limits.
  CHECK(max_f == reserved);
  CHECK(granted > 500);
  CHECK(f_throttles > 0);
  CHECK(throttles > reserved_throttles);
  CHECK(stats(account_a).throttles == throttles);
}
