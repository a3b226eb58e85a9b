// PLACEMENT: the scoring policy of choose_worker (checked against the
// documented formula on many simulated workers) and the actor that asks
// registered workers for their capacity, with stub workers.

#include "nimbus/actors/error.hpp"
#include "nimbus/actors/placement.hpp"

#include "fixture.hpp"

#include <caf/typed_event_based_actor.hpp>

#include <doctest/doctest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace nimbus;

namespace {

/// The documented score, recomputed from the file comment of placement.hpp.
double documented_score(const worker_load& w, uint64_t memory_mb, double packing) {
  double total = static_cast<double>(w.memory_total_mb);
  double used_after = static_cast<double>(w.memory_used_mb + memory_mb);
  double u = used_after / total;
  return packing * u - (1 - packing) * u * u;
}

bool has_room(const worker_load& w, uint64_t memory_mb) {
  return w.memory_total_mb > 0 && w.memory_used_mb + memory_mb <= w.memory_total_mb;
}

/// The index the documented policy picks: highest score, then fewer
/// environments, then the earlier worker; -1 when nobody has room.
long expected_choice(const std::vector<worker_load>& ws, uint64_t memory_mb, double packing) {
  long best = -1;
  for (size_t i = 0; i < ws.size(); ++i) {
    if (!has_room(ws[i], memory_mb))
      continue;
    if (best < 0) {
      best = static_cast<long>(i);
      continue;
    }
    auto& b = ws[static_cast<size_t>(best)];
    double s = documented_score(ws[i], memory_mb, packing);
    double bs = documented_score(b, memory_mb, packing);
    if (s > bs + 1e-9 || (s > bs - 1e-9 && ws[i].environments < b.environments))
      best = static_cast<long>(i);
  }
  return best;
}

std::vector<worker_load> random_workers(std::mt19937& rng, size_t n) {
  // Totals and use in steps of 128 MB make equal scores (ties) common.
  const uint64_t totals[] = {1024, 2048, 4096, 8192};
  std::uniform_int_distribution<int> pick_total(0, 3);
  std::uniform_int_distribution<uint32_t> envs(0, 6);
  std::vector<worker_load> ws(n);
  for (auto& w : ws) {
    w.memory_total_mb = totals[pick_total(rng)];
    std::uniform_int_distribution<uint64_t> steps(0, w.memory_total_mb / 128);
    w.memory_used_mb = steps(rng) * 128;
    w.environments = envs(rng);
  }
  return ws;
}

} // namespace

TEST_CASE("placement: choose_worker follows the documented policy on many workers") {
  std::mt19937 rng{4242};
  const uint64_t sizes[] = {128, 256, 512, 1024, 3008, 8192, 10240};
  const double packings[] = {0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0};
  std::uniform_int_distribution<int> pick_size(0, 6);
  std::uniform_int_distribution<int> pick_packing(0, 6);
  int chosen = 0;
  int none = 0;
  for (int trial = 0; trial < 400; ++trial) {
    auto ws = random_workers(rng, 100);
    auto memory = sizes[pick_size(rng)];
    auto packing = packings[pick_packing(rng)];
    CAPTURE(trial);
    CAPTURE(memory);
    CAPTURE(packing);
    auto choice = choose_worker(ws, memory, packing);
    auto expected = expected_choice(ws, memory, packing);
    if (expected < 0) {
      CHECK_FALSE(choice);
      ++none;
      continue;
    }
    REQUIRE(choice);
    ++chosen;
    const auto& w = ws[choice->index];
    CHECK(has_room(w, memory));
    CHECK(choice->index == static_cast<size_t>(expected));
    CHECK(choice->score == doctest::Approx(documented_score(w, memory, packing)));
    // No feasible worker scores higher.
    for (size_t i = 0; i < ws.size(); ++i)
      if (has_room(ws[i], memory))
        CHECK(documented_score(ws[i], memory, packing) <= choice->score + 1e-9);
    CHECK(choice->reason.rfind("worker " + std::to_string(choice->index) + ":", 0) == 0);
  }
  // Both outcomes happened (8 GB and 10 GB requests often fit nowhere).
  CHECK(chosen > 200);
  CHECK(none > 0);
}

TEST_CASE("placement: nobody is chosen when no worker has room") {
  CHECK_FALSE(choose_worker({}, 128, 0.5));
  std::vector<worker_load> full{{1024, 1024, 3}, {2048, 1984, 1}, {0, 0, 0}, {512, 0, 0}};
  CHECK_FALSE(choose_worker(full, 1024, 0.0));
  CHECK_FALSE(choose_worker(full, 1024, 1.0));
  // A worker with no memory at all never takes anything.
  CHECK_FALSE(choose_worker({{0, 0, 0}}, 0, 0.5));
  // An exact fit is a fit.
  auto exact = choose_worker(full, 512, 0.5);
  REQUIRE(exact);
  CHECK(exact->index == 3);
}

TEST_CASE("placement: packing 1 fills the fullest worker, packing 0 the emptiest") {
  std::vector<worker_load> ws{
    {1024, 512, 0}, // 0: half full
    {1024, 896, 0}, // 1: full after 128 MB, the fullest that fits
    {2048, 0, 0},   // 2: empty
    {1024, 960, 0}, // 3: fuller, but 128 MB do not fit
  };
  auto dense = choose_worker(ws, 128, 1.0);
  REQUIRE(dense);
  CHECK(dense->index == 1);
  CHECK(dense->score == doctest::Approx(1.0));
  auto spread = choose_worker(ws, 128, 0.0);
  REQUIRE(spread);
  CHECK(spread->index == 2);
  CHECK(spread->score == doctest::Approx(-(128.0 / 2048) * (128.0 / 2048)));
  // 0.75 leans to density, 0.25 to headroom.
  auto leaning = choose_worker(ws, 128, 0.75);
  REQUIRE(leaning);
  CHECK(leaning->index == static_cast<size_t>(expected_choice(ws, 128, 0.75)));
  CHECK(leaning->index == 1);
  auto leaning_spread = choose_worker(ws, 128, 0.25);
  REQUIRE(leaning_spread);
  CHECK(leaning_spread->index == 2);
}

// Packing 0.5 prefers the worker that ends nearest to half full; equal
// scores go to fewer environments, then to the earlier worker.
TEST_CASE("placement: packing 0.5 fills toward half, ties go to fewer environments") {
  std::vector<worker_load> ws{
    {1024, 896, 4},
    {8192, 0, 2},
    {2048, 1024, 2},
    {4096, 4000, 0}, // no room for 128 MB
  };
  auto c = choose_worker(ws, 128, 0.5);
  REQUIRE(c);
  CHECK(c->score == doctest::Approx(0.5 * 0.5625 - 0.5 * 0.5625 * 0.5625));
  CHECK(c->index == 2); // 56% used after placement: nearest to half
  // Equal workers: the earlier one.
  std::vector<worker_load> twins{{2048, 512, 1}, {2048, 512, 1}, {2048, 512, 1}};
  for (double packing : {0.0, 0.5, 1.0}) {
    auto t = choose_worker(twins, 256, packing);
    REQUIRE(t);
    CHECK(t->index == 0);
  }
  // The same score with fewer environments later on wins.
  twins[2].environments = 0;
  for (double packing : {0.0, 0.5, 1.0}) {
    auto t = choose_worker(twins, 256, packing);
    REQUIRE(t);
    CHECK(t->index == 2);
  }
  // A higher score beats fewer environments.
  std::vector<worker_load> mixed{{2048, 0, 9}, {2048, 1024, 0}};
  auto m = choose_worker(mixed, 128, 0.0);
  REQUIRE(m);
  CHECK(m->index == 0);
}

TEST_CASE("placement: the reason names the chosen worker and its load") {
  std::vector<worker_load> ws{{1024, 1024, 1}, {4096, 1024, 3}};
  auto c = choose_worker(ws, 512, 1.0);
  REQUIRE(c);
  CHECK(c->index == 1);
  CHECK(c->reason.rfind("worker 1:", 0) == 0);
  CHECK(c->reason.find("1024/4096 MB") != std::string::npos);
  CHECK(c->reason.find("3 environments") != std::string::npos);
}

// -- the PLACEMENT actor with stub workers ------------------------------------

namespace {

/// What the stub workers were asked.
struct worker_calls {
  int capacity = 0;
  int other = 0;
};

/// A WORKER that only reports a fixed capacity (or fails to).
worker_actor::behavior_type stub_worker(caf::expected<worker_capacity> capacity,
                                        std::shared_ptr<worker_calls> calls) {
  return {
    [=](create_atom, const environment_spec&) -> caf::result<environment_ready> {
      ++calls->other;
      return make_error(ec::service_failure, "stub worker: create not supported");
    },
    [=](invoke_atom, const std::string&,
        const invocation_request&) -> caf::result<invocation_result> {
      ++calls->other;
      return make_error(ec::service_failure, "stub worker: invoke not supported");
    },
    [=](destroy_atom, const std::string&) -> caf::result<bool> {
      ++calls->other;
      return make_error(ec::service_failure, "stub worker: destroy not supported");
    },
    [=](capacity_atom) -> caf::result<worker_capacity> {
      ++calls->capacity;
      if (!capacity)
        return capacity.error();
      return *capacity;
    },
  };
}

struct placement_fixture : test::actor_fixture {
  std::shared_ptr<worker_calls> calls = std::make_shared<worker_calls>();
  std::vector<worker_actor> workers;
  placement_actor placement;

  ~placement_fixture() {
    if (placement)
      stop(placement);
    for (auto& w : workers)
      stop(w);
  }

  void start(double packing) {
    placement_config cfg;
    cfg.packing = packing;
    placement = spawn_placement(sys, cfg);
    sched.run();
  }

  worker_actor add_worker(caf::expected<worker_capacity> capacity) {
    auto w = sys.spawn(stub_worker, std::move(capacity), calls);
    workers.push_back(w);
    self->send(placement, register_atom::value, w);
    sched.run();
    return w;
  }

  caf::expected<worker_actor> place(int32_t memory_mb) {
    return request<worker_actor>(placement, place_atom::value, memory_mb);
  }
};

} // namespace

TEST_CASE_FIXTURE(placement_fixture, "placement: the actor places on the worker the policy picks") {
  start(1.0);
  auto half = add_worker(worker_capacity{4096, 2048, 2});
  auto nearly_full = add_worker(worker_capacity{4096, 3584, 5});
  auto empty = add_worker(worker_capacity{8192, 0, 0});
  auto dense = place(512);
  REQUIRE(dense);
  CHECK(*dense == nearly_full);
  CHECK(calls->capacity == 3);
  // 1 GB fits on the nearly full one no more: the next fullest.
  auto next = place(1024);
  REQUIRE(next);
  CHECK(*next == half);
  CHECK(calls->capacity == 6);
  CHECK(calls->other == 0);
  // Spreading picks the empty one.
  stop(placement);
  start(0.0);
  for (auto& w : workers) {
    self->send(placement, register_atom::value, w);
    sched.run();
  }
  auto spread = place(512);
  REQUIRE(spread);
  CHECK(*spread == empty);
}

TEST_CASE_FIXTURE(placement_fixture, "placement: a worker that answers with an error is skipped") {
  start(1.0);
  // The failing worker comes first; were its error taken for a load, it could
  // be chosen.
  add_worker(caf::make_error(ec::service_failure, "capacity unknown"));
  auto roomy = add_worker(worker_capacity{8192, 1024, 1});
  auto got = place(2048);
  REQUIRE(got);
  CHECK(*got == roomy);
  CHECK(calls->capacity == 2);
  // If nobody else has room, there is no placement at all.
  auto too_big = place(8192);
  REQUIRE_FALSE(too_big);
  CHECK(too_big.error() == ec::environment_unavailable);
  CHECK(error_message(too_big.error()) == "no worker has 8192 MB free");
}

TEST_CASE_FIXTURE(placement_fixture, "placement: no workers, no placement") {
  start(0.5);
  auto none = place(128);
  REQUIRE_FALSE(none);
  CHECK(none.error() == ec::environment_unavailable);
  CHECK(error_message(none.error()) == "no worker is registered");
  CHECK(calls->capacity == 0);
}

TEST_CASE_FIXTURE(placement_fixture, "placement: a worker that exits is no longer asked") {
  start(1.0);
  auto best = add_worker(worker_capacity{1024, 896, 0});
  auto other = add_worker(worker_capacity{4096, 0, 0});
  auto first = place(128);
  REQUIRE(first);
  CHECK(*first == best);
  CHECK(calls->capacity == 2);
  stop(best);
  // The down handler forgot it (white box: the test coordinator runs every
  // actor on this thread, so reading the state here is safe).
  auto impl = dynamic_cast<placement_actor::stateful_pointer<placement_state>>(
    caf::actor_cast<caf::abstract_actor*>(placement));
  REQUIRE(impl != nullptr);
  REQUIRE(impl->state.workers.size() == 1);
  CHECK(impl->state.workers[0] == other);
  auto second = place(128);
  REQUIRE(second);
  CHECK(*second == other);
  CHECK(calls->capacity == 3);
}
