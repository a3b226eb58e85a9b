// ASSIGNMENT: warm reuse, the cold path, LAM-9 isolation and retirement,
// with stub COUNTER, PLACEMENT, WORKER and REGISTRY actors written as real
// behaviors of their typed interfaces. The stubs record what they were asked
// in one shared log; the stub worker can hold invocations so that a test
// decides when they finish.

#include "nimbus/actors/assignment.hpp"
#include "nimbus/actors/error.hpp"

#include "fixture.hpp"

#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

using namespace nimbus;
using namespace std::chrono_literals;
using storage::function_record;

namespace {

constexpr const char* account_a = "111111111111";
constexpr const char* account_b = "222222222222";

/// What the stubs were asked, and how they should answer.
struct stub_log {
  // WORKER
  std::vector<environment_spec> creates;
  struct invoke_call {
    std::string environment_id;
    invocation_request request;
  };
  std::vector<invoke_call> invokes;
  std::vector<std::string> destroys;
  /// Fail the next creates with this error.
  caf::error create_error;
  /// Fail the next invokes with this error.
  caf::error invoke_error;
  /// Report the environment lost after the next invocation.
  bool lose_next = false;
  /// Hold invocations until the test delivers them.
  bool hold = false;
  struct held_invoke {
    caf::typed_response_promise<invocation_result> promise;
    invocation_result result;
    std::string environment_id;
  };
  std::vector<held_invoke> held;
  // PLACEMENT
  std::vector<int32_t> places;
  worker_actor worker;
  // ENVIRONMENT stubs (direct invocations): when set, creates name one.
  bool direct = false;
  /// Environment ids the stub environments served, in order.
  std::vector<std::string> direct_invokes;
  /// The next direct invocation quits the environment without an answer.
  bool die_next = false;
  // COUNTER
  int scales = 0;
  bool throttle_scale = false;
  // REGISTRY
  std::vector<metadata_listener_actor> subscribers;
};

using log_ptr = std::shared_ptr<stub_log>;

caf::error unsupported(const char* what) {
  return make_error(ec::service_failure, std::string{"stub: "} + what + " not supported");
}

/// Test-only message to the stub worker: finish the held invocation in this
/// environment. The promise is delivered inside the stub worker: delivering it
/// from the test thread crashes under the test coordinator (CAF 0.17 enqueues
/// the response with the execution unit the worker last ran on).
using finish_atom = caf::atom_constant<caf::atom("finish")>;

/// The stub WORKER: the worker interface plus the test's finish message.
using stub_worker_actor = worker_actor::extend<caf::reacts_to<finish_atom, std::string>>;

/// A stub ENVIRONMENT for the direct path: answers invocations (or quits
/// without answering, when told). Dynamically typed: the assignment only
/// sends it invocations.
caf::behavior stub_environment(caf::event_based_actor* self, log_ptr log, std::string id) {
  return {
    [=](invoke_atom, invocation_request& req) -> caf::result<invocation_result> {
      log->direct_invokes.push_back(id);
      if (std::exchange(log->die_next, false)) {
        self->quit();
        return self->make_response_promise<invocation_result>(); // never delivered
      }
      invocation_result res;
      res.request_id = req.request_id;
      res.outcome = "success";
      res.payload = "direct:" + req.payload;
      res.environment_lost = std::exchange(log->lose_next, false);
      return res;
    },
  };
}

stub_worker_actor::behavior_type stub_worker(stub_worker_actor::pointer self, log_ptr log) {
  return {
    [=](create_atom, environment_spec& spec) -> caf::result<environment_ready> {
      log->creates.push_back(spec);
      if (log->create_error)
        return log->create_error;
      // Served by the shard the assignment asked for.
      environment_ready ready{spec.environment_id, 111, 222, {}, spec.shard};
      if (log->direct)
        ready.environment = self->spawn(stub_environment, log, spec.environment_id);
      return ready;
    },
    [=](invoke_atom, const std::string& id,
        invocation_request& req) -> caf::result<invocation_result> {
      log->invokes.push_back({id, req});
      if (log->invoke_error)
        return log->invoke_error;
      invocation_result res;
      res.request_id = req.request_id;
      res.outcome = "success";
      res.payload = "echo:" + req.payload;
      res.environment_lost = std::exchange(log->lose_next, false);
      if (!log->hold)
        return res;
      auto rp = self->make_response_promise<invocation_result>();
      log->held.push_back({rp, std::move(res), id});
      return rp;
    },
    [=](destroy_atom, const std::string& id) -> bool {
      log->destroys.push_back(id);
      return true;
    },
    [=](capacity_atom) -> caf::result<worker_capacity> { return unsupported("capacity"); },
    [=](finish_atom, const std::string& id) {
      auto it = std::find_if(log->held.begin(), log->held.end(),
                             [&](auto& h) { return h.environment_id == id; });
      if (it == log->held.end())
        return;
      auto h = std::move(*it);
      log->held.erase(it);
      h.promise.deliver(std::move(h.result));
    },
  };
}

placement_actor::behavior_type stub_placement(log_ptr log) {
  return {
    [=](register_atom, const worker_actor&) {},
    [=](place_atom, int32_t memory_mb) -> caf::result<worker_actor> {
      log->places.push_back(memory_mb);
      return log->worker;
    },
  };
}

counter_actor::behavior_type stub_counter(log_ptr log) {
  return {
    [=](acquire_atom, const std::string&, const std::string&) -> caf::result<uint64_t> {
      return unsupported("acquire");
    },
    [=](release_atom, uint64_t) {},
    [=](scale_atom, const std::string&, const std::string&) -> caf::result<bool> {
      ++log->scales;
      if (log->throttle_scale)
        return make_error(ec::throttled, "FunctionInvocationRateLimitExceeded");
      return true;
    },
    [=](reserve_atom, const std::string&, const std::string&, int32_t) {},
    [=](stats_atom, const std::string&) -> caf::result<counter_stats> {
      return unsupported("stats");
    },
  };
}

registry_actor::behavior_type stub_registry(log_ptr log) {
  using namespace transport::lambda;
  return {
    [=](create_atom, const std::string&,
        const function_spec&) -> caf::result<function_record> { return unsupported("create"); },
    [=](get_atom, const std::string&, const std::string&) -> caf::result<function_record> {
      return unsupported("get");
    },
    [=](list_atom, const std::string&, const std::string&,
        int32_t) -> caf::result<function_page> { return unsupported("list"); },
    [=](update_code_atom, const std::string&, const std::string&,
        const code_update&) -> caf::result<function_record> { return unsupported("update"); },
    [=](update_config_atom, const std::string&, const std::string&,
        const configuration_patch&) -> caf::result<function_record> {
      return unsupported("update");
    },
    [=](delete_atom, const std::string&, const std::string&) -> caf::result<bool> {
      return unsupported("delete");
    },
    [=](fetch_code_atom, const std::string&, const std::string&,
        const std::string&) -> caf::result<std::string> { return unsupported("fetch"); },
    [=](usage_atom, const std::string&) -> caf::result<account_usage> {
      return unsupported("usage");
    },
    [=](subscribe_atom, const metadata_listener_actor& listener) {
      log->subscribers.push_back(listener);
    },
    [=](concurrency_atom, const std::string&, const std::string&,
        int32_t) -> caf::result<function_record> { return unsupported("concurrency"); },
    [=](event_config_atom, const std::string&, const std::string&,
        const event_invoke_update&) -> caf::result<function_record> {
      return unsupported("event config");
    },
    [=](event_config_atom, delete_atom, const std::string&,
        const std::string&) -> caf::result<function_record> {
      return unsupported("event config");
    },
  };
}

/// An invocation sent by a client actor, so that the test can go on while it
/// is in flight; `result` is set when the answer arrives.
struct pending_invoke {
  std::shared_ptr<std::optional<caf::expected<invoke_outcome>>> result
    = std::make_shared<std::optional<caf::expected<invoke_outcome>>>();

  bool done() const {
    return result->has_value();
  }
};

struct assignment_fixture : test::actor_fixture {
  log_ptr log = std::make_shared<stub_log>();
  stub_worker_actor worker;
  placement_actor placement;
  counter_actor counter;
  registry_actor registry;
  assignment_actor assignment;
  int next_request = 0;

  assignment_fixture() {
    worker = sys.spawn(stub_worker, log);
    log->worker = caf::actor_cast<worker_actor>(worker);
    placement = sys.spawn(stub_placement, log);
    counter = sys.spawn(stub_counter, log);
    registry = sys.spawn(stub_registry, log);
    sched.run();
  }

  ~assignment_fixture() {
    // Let held invocations finish so that no promise stays undelivered.
    for (auto& h : log->held)
      self->send(worker, finish_atom::value, h.environment_id);
    sched.run();
    if (assignment)
      stop(assignment);
    log->worker = worker_actor{};
    log->subscribers.clear();
    stop(registry);
    stop(counter);
    stop(placement);
    stop(worker);
  }

  void start(std::chrono::milliseconds keep_alive = 10min,
             std::chrono::milliseconds max_lifetime = 2h) {
    assignment_config cfg;
    cfg.region = "eu-west-1";
    cfg.keep_alive = keep_alive;
    cfg.max_lifetime = max_lifetime;
    cfg.sweep_interval = 1s;
    cfg.counter = counter;
    cfg.placement = placement;
    cfg.registry = registry;
    REQUIRE(validate(cfg).empty());
    assignment = spawn_assignment(sys, cfg);
    sched.run();
  }

  static function_record fn(const std::string& account, const std::string& name,
                            const std::string& revision = "rev-1") {
    function_record f;
    f.account_id = account;
    f.name = name;
    f.runtime = "python3.11";
    f.handler = "app.handler";
    f.memory_size = 256;
    f.timeout = 3;
    f.revision_id = revision;
    f.code_sha256_hex = std::string(64, 'a');
    return f;
  }

  invoke_order order(const function_record& f, const std::string& payload, int32_t shard) {
    invoke_order o;
    o.function = std::make_shared<const function_record>(f);
    o.shard = shard;
    o.request.request_id = "req-" + std::to_string(++next_request);
    o.request.payload = payload;
    return o;
  }

  /// Invokes and runs every actor until idle; the answer must be there.
  caf::expected<invoke_outcome> invoke(const function_record& f,
                                       const std::string& payload = "{}", int32_t shard = -1) {
    auto p = start_invoke(f, payload, shard);
    REQUIRE_MESSAGE(p.done(), "the invocation did not finish");
    return std::move(**p.result);
  }

  /// Invokes from a client actor and runs every actor until idle; the answer
  /// may still be outstanding (held by the stub worker).
  pending_invoke start_invoke(const function_record& f, const std::string& payload = "{}",
                              int32_t shard = -1) {
    pending_invoke p;
    auto slot = p.result;
    auto target = assignment;
    auto o = order(f, payload, shard);
    sys.spawn([=](caf::event_based_actor* client) {
      client->request(target, caf::infinite, invoke_atom::value, o)
        .then([=](invoke_outcome& x) { slot->emplace(std::move(x)); },
              [=](caf::error& e) { slot->emplace(std::move(e)); });
    });
    sched.run();
    return p;
  }

  /// Finishes the held invocation in the given environment.
  void deliver(const std::string& environment_id) {
    auto before = log->held.size();
    auto it = std::find_if(log->held.begin(), log->held.end(),
                           [&](auto& h) { return h.environment_id == environment_id; });
    REQUIRE(it != log->held.end());
    self->send(worker, finish_atom::value, environment_id);
    sched.run();
    CHECK(log->held.size() == before - 1);
  }

  bool destroyed(const std::string& id) const {
    return std::count(log->destroys.begin(), log->destroys.end(), id) == 1;
  }

  /// Advances virtual time (firing the sweep timer) and runs every actor.
  void advance(caf::timespan d) {
    sched.advance_time(d);
    sched.run();
  }
};

} // namespace

TEST_CASE_FIXTURE(assignment_fixture, "assignment: an order shares its record in process and carries it by value on the wire") {
  auto f = fn(account_a, "wire");
  f.environment = {{"KEY", "value"}};
  auto o = order(f, R"({"x":1})", 1);
  // Copies of the order (as CAF makes them) share one record.
  auto copy = o;
  CHECK(copy.function.get() == o.function.get());
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  REQUIRE_FALSE(sink(o));
  invoke_order back;
  caf::binary_deserializer source{sys, buf};
  REQUIRE_FALSE(source(back));
  REQUIRE(back.function);
  CHECK(back.function.get() != o.function.get());
  CHECK(back.function->name == "wire");
  CHECK(back.function->account_id == account_a);
  CHECK(back.function->environment.at("KEY") == "value");
  CHECK(back.function->revision_id == f.revision_id);
  CHECK(back.request.payload == R"({"x":1})");
  CHECK(back.request.request_id == o.request.request_id);
  CHECK(back.shard == 1);
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: an order without a record is refused") {
  start();
  invoke_order o;
  o.request.request_id = "req-none";
  auto slot = std::make_shared<std::optional<caf::expected<invoke_outcome>>>();
  auto target = assignment;
  sys.spawn([=](caf::event_based_actor* client) {
    client->request(target, caf::infinite, invoke_atom::value, o)
      .then([=](invoke_outcome& x) { slot->emplace(std::move(x)); },
            [=](caf::error& e) { slot->emplace(std::move(e)); });
  });
  sched.run();
  REQUIRE(slot->has_value());
  CHECK_FALSE(**slot);
  CHECK(log->creates.empty());
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: subscribes to the registry at start") {
  start();
  REQUIRE(log->subscribers.size() == 1);
  CHECK(log->subscribers[0].address() == assignment.address());
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: the first invoke is cold, the second warm") {
  start();
  auto f = fn(account_a, "f");
  auto first = invoke(f, R"({"n":1})");
  REQUIRE(first);
  CHECK(first->cold);
  CHECK(first->result.outcome == "success");
  CHECK(first->result.payload == R"(echo:{"n":1})");
  CHECK(first->result.request_id == "req-1");
  CHECK(first->sandbox_us == 111);
  CHECK(first->init_us == 222);
  CHECK(log->scales == 1);
  REQUIRE(log->places.size() == 1);
  CHECK(log->places[0] == 256);
  // The worker saw one create, then one invoke in that environment.
  REQUIRE(log->creates.size() == 1);
  REQUIRE(log->invokes.size() == 1);
  const auto& spec = log->creates[0];
  CHECK(spec.environment_id == first->environment_id);
  CHECK(spec.account_id == account_a);
  CHECK(spec.function_name == "f");
  CHECK(spec.memory_mb == 256);
  CHECK(spec.runtime == "python3.11");
  CHECK(spec.region == "eu-west-1");
  CHECK(spec.function_arn == "arn:aws:lambda:eu-west-1:111111111111:function:f");
  CHECK(log->invokes[0].environment_id == first->environment_id);
  CHECK(log->invokes[0].request.payload == R"({"n":1})");

  auto second = invoke(f, R"({"n":2})");
  REQUIRE(second);
  CHECK_FALSE(second->cold);
  CHECK(second->environment_id == first->environment_id);
  CHECK(second->result.payload == R"(echo:{"n":2})");
  CHECK(second->placement_us == 0);
  CHECK(log->creates.size() == 1);
  CHECK(log->scales == 1);
  CHECK(log->places.size() == 1);
  REQUIRE(log->invokes.size() == 2);
  CHECK(log->invokes[1].environment_id == first->environment_id);
  CHECK(log->destroys.empty());
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: a busy environment is not shared") {
  start();
  auto f = fn(account_a, "f");
  log->hold = true;
  auto p1 = start_invoke(f, "one");
  CHECK_FALSE(p1.done());
  REQUIRE(log->creates.size() == 1);
  REQUIRE(log->held.size() == 1);
  // The second invoke arrives while the first still runs: a new environment.
  auto p2 = start_invoke(f, "two");
  CHECK_FALSE(p2.done());
  REQUIRE(log->creates.size() == 2);
  REQUIRE(log->held.size() == 2);
  auto env1 = log->held[0].environment_id;
  auto env2 = log->held[1].environment_id;
  CHECK(env1 != env2);
  deliver(env1);
  REQUIRE(p1.done());
  CHECK_FALSE(p2.done());
  auto r1 = **p1.result;
  REQUIRE(r1);
  CHECK(r1->cold);
  CHECK(r1->environment_id == env1);
  CHECK(r1->result.payload == "echo:one");
  deliver(env2);
  REQUIRE(p2.done());
  auto r2 = **p2.result;
  REQUIRE(r2);
  CHECK(r2->cold);
  CHECK(r2->environment_id == env2);
  CHECK(r2->result.payload == "echo:two");
  CHECK(log->destroys.empty());
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: the most recently used idle environment is taken") {
  start();
  auto f = fn(account_a, "f");
  log->hold = true;
  auto p1 = start_invoke(f);
  auto p2 = start_invoke(f);
  REQUIRE(log->held.size() == 2);
  auto env1 = log->held[0].environment_id;
  auto env2 = log->held[1].environment_id;
  // env2 finishes first, env1 last: env1 is the most recently used.
  deliver(env2);
  deliver(env1);
  CHECK(p1.done());
  CHECK(p2.done());
  log->hold = false;
  auto warm = invoke(f);
  REQUIRE(warm);
  CHECK_FALSE(warm->cold);
  CHECK(warm->environment_id == env1);
  // The other order: two warm invokes in flight take env1 (most recent), then
  // env2; env1 finishes first, so env2 is the most recent afterwards.
  log->hold = true;
  auto p3 = start_invoke(f);
  auto p4 = start_invoke(f);
  REQUIRE(log->held.size() == 2);
  CHECK(log->held[0].environment_id == env1);
  CHECK(log->held[1].environment_id == env2);
  deliver(env1);
  deliver(env2);
  CHECK(p3.done());
  CHECK(p4.done());
  log->hold = false;
  auto again = invoke(f);
  REQUIRE(again);
  CHECK(again->environment_id == env2);
  CHECK(log->creates.size() == 2);
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: an idle environment on the request's io shard goes first") {
  start();
  auto f = fn(account_a, "f");
  log->hold = true;
  auto p0 = start_invoke(f, "{}", 0);
  auto p1 = start_invoke(f, "{}", 1);
  REQUIRE(log->held.size() == 2);
  // A cold start asks for an environment on the request's shard.
  REQUIRE(log->creates.size() == 2);
  CHECK(log->creates[0].shard == 0);
  CHECK(log->creates[1].shard == 1);
  auto env0 = log->held[0].environment_id;
  auto env1 = log->held[1].environment_id;
  // env0 finishes last: it is the most recently used.
  deliver(env1);
  deliver(env0);
  REQUIRE(p0.done());
  REQUIRE(p1.done());
  log->hold = false;
  // A request on shard 1 takes env1 although env0 was used more recently.
  auto on1 = invoke(f, "{}", 1);
  REQUIRE(on1);
  CHECK_FALSE(on1->cold);
  CHECK(on1->environment_id == env1);
  // Now env1 is the most recent; shard 0 still gets env0.
  auto on0 = invoke(f, "{}", 0);
  REQUIRE(on0);
  CHECK(on0->environment_id == env0);
  // No hint, or a shard no idle environment is on: the most recent one.
  auto any = invoke(f, "{}", -1);
  REQUIRE(any);
  CHECK(any->environment_id == env0);
  auto other = invoke(f, "{}", 7);
  REQUIRE(other);
  CHECK(other->environment_id == env0);
  CHECK(log->creates.size() == 2);
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: a new revision gets new environments, the old retire (LAM-9)") {
  start();
  auto v1 = fn(account_a, "f", "rev-1");
  auto v2 = fn(account_a, "f", "rev-2");
  // Two rev-1 environments: one idle, one busy when rev-2 arrives.
  log->hold = true;
  auto done_first = start_invoke(v1);
  auto busy = start_invoke(v1);
  log->hold = false;
  REQUIRE(log->held.size() == 2);
  auto idle_env = log->held[0].environment_id;
  auto busy_env = log->held[1].environment_id;
  deliver(idle_env);
  REQUIRE(done_first.done());

  auto fresh = invoke(v2);
  REQUIRE(fresh);
  CHECK(fresh->cold);
  CHECK(fresh->environment_id != idle_env);
  CHECK(fresh->environment_id != busy_env);
  REQUIRE(log->creates.size() == 3);
  CHECK(log->creates[2].environment_id == fresh->environment_id);
  // The idle rev-1 environment is destroyed at once, the busy one not yet.
  CHECK(destroyed(idle_env));
  CHECK_FALSE(destroyed(busy_env));
  // The busy one finishes its invocation, then it is destroyed, not reused.
  deliver(busy_env);
  REQUIRE(busy.done());
  REQUIRE(**busy.result);
  CHECK((**busy.result)->result.outcome == "success");
  CHECK(destroyed(busy_env));
  auto warm = invoke(v2);
  REQUIRE(warm);
  CHECK_FALSE(warm->cold);
  CHECK(warm->environment_id == fresh->environment_id);
  CHECK(log->creates.size() == 3);
  CHECK(log->destroys.size() == 2);
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: environments never cross accounts or functions") {
  start();
  auto af = invoke(fn(account_a, "f"));
  auto bf = invoke(fn(account_b, "f"));
  auto ag = invoke(fn(account_a, "g"));
  REQUIRE(af);
  REQUIRE(bf);
  REQUIRE(ag);
  CHECK(af->cold);
  CHECK(bf->cold);
  CHECK(ag->cold);
  REQUIRE(log->creates.size() == 3);
  CHECK(log->creates[1].account_id == account_b);
  CHECK(log->creates[1].function_name == "f");
  CHECK(log->creates[2].account_id == account_a);
  CHECK(log->creates[2].function_name == "g");
  CHECK(af->environment_id != bf->environment_id);
  CHECK(af->environment_id != ag->environment_id);
  CHECK(bf->environment_id != ag->environment_id);
  // Each goes back to its own environment; nobody retired the others.
  for (int i = 0; i < 2; ++i) {
    auto b = invoke(fn(account_b, "f"));
    auto a = invoke(fn(account_a, "f"));
    auto g = invoke(fn(account_a, "g"));
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(g);
    CHECK(a->environment_id == af->environment_id);
    CHECK(b->environment_id == bf->environment_id);
    CHECK(g->environment_id == ag->environment_id);
  }
  CHECK(log->creates.size() == 3);
  CHECK(log->destroys.empty());
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: invalidate retires idle at once and busy after the invocation") {
  start();
  REQUIRE(log->subscribers.size() == 1);
  auto f = fn(account_a, "f");
  auto g = fn(account_a, "g");
  auto other = invoke(g);
  REQUIRE(other);
  auto b_same_name = invoke(fn(account_b, "f"));
  REQUIRE(b_same_name);
  log->hold = true;
  auto p1 = start_invoke(f);
  auto p2 = start_invoke(f);
  REQUIRE(log->held.size() == 2);
  auto idle_env = log->held[0].environment_id;
  auto busy_env = log->held[1].environment_id;
  deliver(idle_env);
  REQUIRE(p1.done());
  // The registry tells its subscriber that A's f changed to a new revision.
  self->send(log->subscribers[0], invalidate_atom::value, std::string{account_a},
             std::string{"f"}, std::string{"rev-2"});
  sched.run();
  CHECK(destroyed(idle_env));
  CHECK_FALSE(destroyed(busy_env));
  CHECK(log->destroys.size() == 1);
  deliver(busy_env);
  REQUIRE(p2.done());
  REQUIRE(**p2.result);
  CHECK((**p2.result)->result.outcome == "success");
  CHECK(destroyed(busy_env));
  CHECK(log->destroys.size() == 2);
  // f's new revision starts cold; g and B's f are untouched and warm.
  log->hold = false;
  auto next = invoke(fn(account_a, "f", "rev-2"));
  REQUIRE(next);
  CHECK(next->cold);
  CHECK(next->environment_id != idle_env);
  CHECK(next->environment_id != busy_env);
  auto g_again = invoke(g);
  REQUIRE(g_again);
  CHECK_FALSE(g_again->cold);
  CHECK(g_again->environment_id == other->environment_id);
  auto b_again = invoke(fn(account_b, "f"));
  REQUIRE(b_again);
  CHECK_FALSE(b_again->cold);
  CHECK(b_again->environment_id == b_same_name->environment_id);
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: a change that keeps the revision keeps environments warm") {
  start();
  REQUIRE(log->subscribers.size() == 1);
  auto f = fn(account_a, "f");
  auto first = invoke(f);
  REQUIRE(first);
  REQUIRE(first->cold);
  // E.g. PutFunctionEventInvokeConfig or PutFunctionConcurrency: the registry
  // announces the change with the unchanged RevisionId.
  self->send(log->subscribers[0], invalidate_atom::value, std::string{account_a},
             std::string{"f"}, std::string{"rev-1"});
  sched.run();
  CHECK(log->destroys.empty());
  auto again = invoke(f);
  REQUIRE(again);
  CHECK_FALSE(again->cold);
  CHECK(again->environment_id == first->environment_id);
  // Deleted (no revision): nothing of it stays.
  self->send(log->subscribers[0], invalidate_atom::value, std::string{account_a},
             std::string{"f"}, std::string{});
  sched.run();
  CHECK(destroyed(first->environment_id));
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: idle environments retire after the keep-alive") {
  start(5s);
  auto f = fn(account_a, "f");
  auto first = invoke(f);
  REQUIRE(first);
  // Used again at 4 s: the keep-alive counts from the last use.
  advance(4s);
  CHECK(log->destroys.empty());
  auto warm = invoke(f);
  REQUIRE(warm);
  CHECK_FALSE(warm->cold);
  advance(4s);
  CHECK(log->destroys.empty());
  // 6 s after its last use the sweep retires it.
  advance(2s);
  CHECK(destroyed(first->environment_id));
  auto cold = invoke(f);
  REQUIRE(cold);
  CHECK(cold->cold);
  CHECK(cold->environment_id != first->environment_id);
  CHECK(log->creates.size() == 2);
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: every environment retires after its maximum lifetime") {
  start(1h, 10s);
  auto f = fn(account_a, "f");
  auto first = invoke(f);
  REQUIRE(first);
  for (int i = 0; i < 2; ++i) {
    advance(4s);
    auto warm = invoke(f);
    REQUIRE(warm);
    CHECK(warm->environment_id == first->environment_id);
  }
  CHECK(log->destroys.empty());
  // Busy at 10 s when the 11 s sweep finds it too old: it finishes its
  // invocation, then retires.
  advance(2s);
  log->hold = true;
  auto busy_at_end = start_invoke(f);
  REQUIRE(log->held.size() == 1);
  CHECK(log->held[0].environment_id == first->environment_id);
  advance(1s);
  CHECK(log->destroys.empty());
  deliver(first->environment_id);
  REQUIRE(busy_at_end.done());
  CHECK(destroyed(first->environment_id));
  log->hold = false;
  // An idle one past its lifetime goes at the next sweep.
  auto second = invoke(f);
  REQUIRE(second);
  CHECK(second->cold);
  advance(11s);
  CHECK(destroyed(second->environment_id));
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: a lost environment is forgotten, not destroyed") {
  start();
  auto f = fn(account_a, "f");
  log->lose_next = true;
  auto lost = invoke(f);
  REQUIRE(lost);
  CHECK(lost->result.outcome == "success");
  // The worker already discarded it: no destroy is sent.
  CHECK(log->destroys.empty());
  auto next = invoke(f);
  REQUIRE(next);
  CHECK(next->cold);
  CHECK(next->environment_id != lost->environment_id);
  CHECK(log->creates.size() == 2);
  CHECK(log->destroys.empty());
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: a scale throttle reaches the caller and creates nothing") {
  start();
  auto f = fn(account_a, "f");
  log->throttle_scale = true;
  auto r = invoke(f);
  REQUIRE_FALSE(r);
  CHECK(r.error() == ec::throttled);
  CHECK(error_message(r.error()) == "FunctionInvocationRateLimitExceeded");
  CHECK(log->scales == 1);
  CHECK(log->places.empty());
  CHECK(log->creates.empty());
  CHECK(log->invokes.empty());
  // A warm environment needs no token.
  log->throttle_scale = false;
  REQUIRE(invoke(f));
  log->throttle_scale = true;
  auto warm = invoke(f);
  REQUIRE(warm);
  CHECK_FALSE(warm->cold);
  CHECK(log->scales == 2);
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: a failed create reaches the caller and is not kept") {
  start();
  auto f = fn(account_a, "f");
  log->create_error = make_error(ec::init_failed, "Runtime.ExitError");
  auto r = invoke(f);
  REQUIRE_FALSE(r);
  CHECK(r.error() == ec::init_failed);
  CHECK(error_message(r.error()) == "Runtime.ExitError");
  REQUIRE(log->creates.size() == 1);
  CHECK(log->invokes.empty());
  // The worker cleans up a failed create itself: no destroy for it.
  CHECK(log->destroys.empty());
  log->create_error = caf::error{};
  auto next = invoke(f);
  REQUIRE(next);
  CHECK(next->cold);
  CHECK(next->environment_id != log->creates[0].environment_id);
  CHECK(log->creates.size() == 2);
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: a failed invoke reaches the caller and destroys the environment") {
  start();
  auto f = fn(account_a, "f");
  auto first = invoke(f);
  REQUIRE(first);
  log->invoke_error = make_error(ec::environment_unavailable, "sandbox gone");
  auto r = invoke(f);
  REQUIRE_FALSE(r);
  CHECK(r.error() == ec::environment_unavailable);
  CHECK(destroyed(first->environment_id));
  log->invoke_error = caf::error{};
  auto next = invoke(f);
  REQUIRE(next);
  CHECK(next->cold);
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: invocations go straight to the environment the worker names") {
  start();
  log->direct = true;
  auto f = fn(account_a, "f");
  auto cold = invoke(f, "1");
  REQUIRE(cold);
  CHECK(cold->cold);
  CHECK(cold->result.payload == "direct:1");
  auto warm = invoke(f, "2");
  REQUIRE(warm);
  CHECK_FALSE(warm->cold);
  CHECK(warm->environment_id == cold->environment_id);
  CHECK(warm->result.payload == "direct:2");
  // Not through the worker.
  CHECK(log->invokes.empty());
  CHECK(log->direct_invokes.size() == 2);
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: a direct environment that loses its sandbox is destroyed through its worker") {
  start();
  log->direct = true;
  auto f = fn(account_a, "f");
  log->lose_next = true;
  auto lost = invoke(f);
  REQUIRE(lost);
  // The worker did not see the invocation: it is told to destroy.
  CHECK(destroyed(lost->environment_id));
  auto next = invoke(f);
  REQUIRE(next);
  CHECK(next->cold);
  CHECK(next->environment_id != lost->environment_id);
}

TEST_CASE_FIXTURE(assignment_fixture, "assignment: an environment that dies during an invocation fails it, not hangs it") {
  start();
  log->direct = true;
  auto f = fn(account_a, "f");
  auto first = invoke(f);
  REQUIRE(first);
  log->die_next = true;
  auto r = invoke(f);
  REQUIRE_FALSE(r);
  CHECK(r.error() == ec::environment_unavailable);
  CHECK(error_message(r.error()) == "the environment stopped unexpectedly");
  CHECK(destroyed(first->environment_id));
  auto next = invoke(f);
  REQUIRE(next);
  CHECK(next->cold);
  CHECK(next->result.payload == "direct:{}");
}
