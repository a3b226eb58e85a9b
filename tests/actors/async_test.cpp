// The async path: QUEUE PARTITION, POLLER and QUEUE MANAGER with a real
// REGISTRY and COUNTER and a scripted ASSIGNMENT, on a real actor system
// (the durable log answers from its writer thread) and real files. Timings
// are scaled down through the config; time assertions have wide margins.

#include "nimbus/actors/counter.hpp"
#include "nimbus/actors/error.hpp"
#include "nimbus/actors/poller.hpp"
#include "nimbus/actors/queue.hpp"
#include "nimbus/actors/queue_manager.hpp"
#include "nimbus/actors/registry.hpp"
#include "nimbus/storage/digest.hpp"
#include "../support/memory_function_store.hpp"
#include "../support/zip_builder.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <doctest/doctest.h>

#include <simdjson.h>

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

using namespace nimbus;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

constexpr const char* account = "123456789012";

struct system_config : caf::actor_system_config {
  system_config() {
    set("scheduler.max-threads", 2);
    set("logger.verbosity", caf::atom("quiet"));
    add_message_types<caf::id_block::nimbus>();
  }
};

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// What the scripted ASSIGNMENT saw and how it answers.
struct script {
  std::mutex mutex;
  struct call {
    std::string request_id;
    std::string function;
    std::string payload;
    int64_t at_ms;
  };
  std::vector<call> calls;
  /// Outcome per function: "success" or "function_error".
  std::map<std::string, std::string> outcome;

  size_t count(const std::string& function) {
    std::lock_guard<std::mutex> g{mutex};
    size_t n = 0;
    for (auto& c : calls)
      n += c.function == function;
    return n;
  }
  std::vector<call> of(const std::string& function) {
    std::lock_guard<std::mutex> g{mutex};
    std::vector<call> out;
    for (auto& c : calls)
      if (c.function == function)
        out.push_back(c);
    return out;
  }
};

assignment_actor::behavior_type scripted_assignment(assignment_actor::pointer,
                                                    std::shared_ptr<script> s) {
  return {
    [=](invoke_atom, invoke_order& order) -> invoke_outcome {
      invoke_outcome o;
      std::lock_guard<std::mutex> g{s->mutex};
      s->calls.push_back({order.request.request_id, order.function->name, order.request.payload,
                          wall_ms()});
      auto it = s->outcome.find(order.function->name);
      o.result.outcome = it == s->outcome.end() ? "success" : it->second;
      o.result.payload = o.result.outcome == "success"
                           ? std::string{R"({"ok":true})"}
                           : std::string{R"({"errorMessage":"boom","errorType":"Error"})"};
      return o;
    },
    [=](stats_atom) -> std::map<std::string, uint64_t> { return {}; },
    [=](invalidate_atom, const std::string&, const std::string&, const std::string&) {},
    [=](tick_atom) {},
  };
}

/// Waits (polling, bounded) until `pred` holds.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 10s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred())
      return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

struct async_fixture {
  fs::path tmp;
  system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  std::shared_ptr<script> calls = std::make_shared<script>();
  registry_actor registry;
  counter_actor counter;
  assignment_actor assignment;
  std::optional<queue_manager_actor> manager;
  /// Added to the wall clock of the queues and pollers (moves time forward).
  std::shared_ptr<std::atomic<int64_t>> skew = std::make_shared<std::atomic<int64_t>>(0);

  async_fixture() {
    char tmpl[] = "/tmp/nimbus-async-XXXXXX";
    tmp = ::mkdtemp(tmpl);
    counter_config cc;
    counter = spawn_counter(sys, cc, {});
    registry_config rc;
    rc.counter = counter;
    rc.now_ms = wall_ms;
    registry = spawn_registry(sys, rc, std::make_shared<test::memory_function_store>(), {});
    assignment = sys.spawn(scripted_assignment, calls);
  }

  ~async_fixture() {
    if (manager)
      self->send_exit(*manager, caf::exit_reason::user_shutdown);
    for (auto h : {caf::actor_cast<caf::actor>(registry), caf::actor_cast<caf::actor>(counter),
                   caf::actor_cast<caf::actor>(assignment)})
      self->send_exit(h, caf::exit_reason::user_shutdown);
    std::error_code ec;
    fs::remove_all(tmp, ec);
  }

  config::async_config timings() {
    config::async_config a;
    a.pollers_min = 1;
    a.pollers_max = 4;
    a.retry_delay_first = 300ms;
    a.retry_delay_second = 600ms;
    a.backoff_initial = 50ms;
    a.backoff_max = 200ms;
    a.visibility_margin = 100ms;
    a.tick = 20ms;
    return a;
  }

  void start(config::async_config a) {
    queue_manager_config qc;
    qc.dir = (tmp / "queues").string();
    qc.async = a;
    auto skew_ = skew;
    qc.now_ms = [skew_] { return wall_ms() + skew_->load(); };
    qc.registry = registry;
    qc.counter = counter;
    qc.assignment = assignment;
    std::string error;
    manager = spawn_queue_manager(sys, qc, error);
    REQUIRE_MESSAGE(manager, error);
  }

  template <class T, class Handle, class... Ts>
  caf::expected<T> ask(const Handle& h, Ts&&... xs) {
    caf::expected<T> result{caf::sec::request_timeout};
    self->request(h, 10s, std::forward<Ts>(xs)...)
      .receive([&](T& x) { result = std::move(x); }, [&](caf::error& e) { result = std::move(e); });
    return result;
  }

  void create(const std::string& name) {
    transport::lambda::function_spec s;
    s.name = name;
    s.runtime = "python3.11";
    s.role = "arn:aws:iam::123456789012:role/r";
    s.handler = "app.handler";
    s.zip = test::make_zip({{"app.py", "def handler(e, c): return 1\n"}});
    REQUIRE(ask<storage::function_record>(registry, create_atom::value, std::string{account}, s));
  }

  std::string enqueue(const std::string& function, const std::string& payload,
                      int64_t enqueued_ms = 0) {
    queued_event ev;
    ev.request_id = storage::request_uuid();
    ev.account_id = account;
    ev.function_name = function;
    ev.payload = payload;
    ev.enqueued_ms = enqueued_ms ? enqueued_ms : wall_ms() + skew->load();
    ev.timeout_s = 1;
    auto id = ask<std::string>(*manager, enqueue_atom::value, ev);
    REQUIRE(id);
    CHECK(*id == ev.request_id);
    return *id;
  }

  queue_stats stats() {
    queue_stats out;
    self->request(*manager, 10s, stats_atom::value)
      .receive([&](queue_stats& s, uint32_t) { out = s; }, [&](caf::error&) {});
    return out;
  }
};

} // namespace

TEST_CASE_FIXTURE(async_fixture, "async: an accepted event runs once and ends as Success") {
  create("f1");
  start(timings());
  auto id = enqueue("f1", R"({"n":1})");
  REQUIRE(eventually([&] { return stats().outcomes["Success"] == 1; }));
  auto runs = calls->of("f1");
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].request_id == id);
  CHECK(runs[0].payload == R"({"n":1})");
  auto s = stats();
  CHECK(s.depth == 0);
  CHECK(s.accepted == 1);
  CHECK(s.duplicates == 0);
}

TEST_CASE_FIXTURE(async_fixture, "async: LAM-1 function errors are retried twice on schedule") {
  create("bad");
  calls->outcome["bad"] = "function_error";
  auto a = timings();
  start(a);
  enqueue("bad", R"({"fail":true})");
  REQUIRE(eventually([&] { return stats().outcomes["RetriesExhausted"] == 1; }));
  // Exactly three runs: the first, then after retry_delay_first, then after
  // retry_delay_second (lower bounds only: the machine may be slow).
  std::this_thread::sleep_for(200ms);
  auto runs = calls->of("bad");
  REQUIRE(runs.size() == 3);
  CHECK(runs[1].at_ms - runs[0].at_ms >= a.retry_delay_first.count());
  CHECK(runs[2].at_ms - runs[1].at_ms >= a.retry_delay_second.count());
  CHECK(stats().retries == 2);
}

TEST_CASE_FIXTURE(async_fixture, "async: LAM-2 an event older than its maximum age is not run") {
  create("f1");
  start(timings());
  // Accepted 7 hours ago (the default MaximumEventAgeInSeconds is 6 h).
  enqueue("f1", "{}", wall_ms() - 7 * 3600 * 1000);
  REQUIRE(eventually([&] { return stats().outcomes["EventAgeExceeded"] == 1; }));
  CHECK(calls->count("f1") == 0);
}

TEST_CASE_FIXTURE(async_fixture, "async: reserved concurrency 0 fails at once without a run") {
  create("zero");
  REQUIRE(ask<storage::function_record>(registry, concurrency_atom::value, std::string{account},
                                        std::string{"zero"}, int32_t{0}));
  start(timings());
  enqueue("zero", "{}");
  REQUIRE(eventually([&] { return stats().outcomes["RetriesExhausted"] == 1; }));
  CHECK(calls->count("zero") == 0);
  CHECK(stats().retries == 0);
}

TEST_CASE_FIXTURE(async_fixture, "async: events of a deleted function are dropped, not run") {
  start(timings());
  enqueue("missing", "{}");
  REQUIRE(eventually([&] { return stats().outcomes["FunctionDeleted"] == 1; }));
  CHECK(calls->count("missing") == 0);
}

TEST_CASE_FIXTURE(async_fixture, "async: LAM-3 many events each end exactly once") {
  create("f1");
  auto a = timings();
  a.pollers_max = 8;
  start(a);
  std::set<std::string> ids;
  for (int i = 0; i < 2000; ++i)
    ids.insert(enqueue("f1", "{\"i\":" + std::to_string(i) + "}"));
  REQUIRE(eventually([&] { return stats().outcomes["Success"] == 2000; }, 60s));
  auto runs = calls->of("f1");
  std::set<std::string> ran;
  for (auto& r : runs)
    ran.insert(r.request_id);
  CHECK(ran == ids);
  CHECK(runs.size() == ids.size()); // no duplicates without crashes
  CHECK(stats().depth == 0);
}

// -- the partition alone -------------------------------------------------------

namespace {

struct queue_fixture : async_fixture {
  std::chrono::milliseconds margin = 100ms;
  queue_config qc() {
    queue_config c;
    c.dir = (tmp / "q").string();
    c.visibility_margin = margin;
    c.tick = 20ms;
    auto skew_ = skew;
    c.now_ms = [skew_] { return wall_ms() + skew_->load(); };
    return c;
  }
  queue_actor open() {
    std::string error;
    auto q = spawn_queue(sys, qc(), error);
    REQUIRE_MESSAGE(q, error);
    return *q;
  }
  queued_event event(const std::string& payload) {
    queued_event ev;
    ev.request_id = storage::request_uuid();
    ev.account_id = account;
    ev.function_name = "f1";
    ev.payload = payload;
    ev.enqueued_ms = wall_ms();
    ev.timeout_s = 0; // the lease is the margin only
    return ev;
  }
  std::vector<queued_event> lease(queue_actor q) {
    auto r = ask<std::vector<queued_event>>(q, lease_atom::value, uint32_t{10});
    REQUIRE(r);
    return *r;
  }
  void stop(queue_actor q) {
    self->send_exit(q, caf::exit_reason::user_shutdown);
    self->wait_for(q);
  }
};

} // namespace

TEST_CASE_FIXTURE(queue_fixture, "queue: Q-6 a stalled lease expires, the event is delivered "
                                 "again and the late completion is rejected") {
  auto q = open();
  REQUIRE(ask<std::string>(q, enqueue_atom::value, event("{}")));
  auto first = lease(q);
  REQUIRE(first.size() == 1);
  CHECK_FALSE(first[0].redelivery);
  // The poller stalls past its lease: the next lease gets the event again.
  auto second = lease(q);
  REQUIRE(second.size() == 1);
  CHECK(second[0].seq == first[0].seq);
  CHECK(second[0].redelivery);
  CHECK(second[0].attempts == 2);
  CHECK(second[0].lease != first[0].lease);
  auto stale = ask<bool>(q, complete_atom::value, first[0].seq, first[0].lease,
                         std::string{"Success"});
  REQUIRE(stale);
  CHECK_FALSE(*stale);
  auto fresh = ask<bool>(q, complete_atom::value, second[0].seq, second[0].lease,
                         std::string{"Success"});
  REQUIRE(fresh);
  CHECK(*fresh);
  auto s = ask<queue_stats>(q, stats_atom::value);
  REQUIRE(s);
  CHECK(s->depth == 0);
  CHECK(s->duplicates == 1);
  CHECK(s->stale_completions == 1);
  stop(q);
}

TEST_CASE_FIXTURE(queue_fixture, "queue: a restart keeps pending events, retry counters and "
                                 "counts a possible second run") {
  std::string done_id, retried_id, leased_id;
  margin = 10s; // no lease may expire in this test
  {
    auto q = open();
    auto a = event(R"({"a":1})");
    auto b = event(R"({"b":2})");
    auto c = event(R"({"c":3})");
    done_id = a.request_id;
    retried_id = b.request_id;
    leased_id = c.request_id;
    for (auto& e : {a, b, c})
      REQUIRE(ask<std::string>(q, enqueue_atom::value, e));
    auto got = lease(q);
    REQUIRE(got.size() == 3);
    for (auto& e : got) {
      if (e.request_id == done_id) {
        REQUIRE(ask<bool>(q, complete_atom::value, e.seq, e.lease, std::string{"Success"}));
      } else if (e.request_id == retried_id) {
        auto r = e;
        r.function_errors = 1;
        REQUIRE(ask<bool>(q, retry_atom::value, r, int64_t{0}));
      }
    }
    // Make sure the DONE and RETRY records are durable: one more enqueue
    // waits for its own record, which the log writes after them.
    REQUIRE(ask<std::string>(q, enqueue_atom::value, event(R"({"d":4})")));
    stop(q);
  }
  auto q = open();
  auto got = lease(q);
  std::map<std::string, queued_event> by_id;
  for (auto& e : got)
    by_id[e.request_id] = e;
  CHECK(by_id.count(done_id) == 0);
  REQUIRE(by_id.count(retried_id) == 1);
  CHECK(by_id[retried_id].function_errors == 1);
  CHECK_FALSE(by_id[retried_id].redelivery);
  REQUIRE(by_id.count(leased_id) == 1);
  // Leased before the restart with no outcome: it may have run already.
  CHECK(by_id[leased_id].redelivery);
  CHECK(by_id[leased_id].attempts == 2);
  CHECK(by_id[leased_id].payload == R"({"c":3})");
  auto s = ask<queue_stats>(q, stats_atom::value);
  REQUIRE(s);
  CHECK(s->duplicates == 1);
  stop(q);
}

TEST_CASE("async: the invocation record has the AWS shape") {
  queued_event ev;
  ev.request_id = "req-1";
  ev.payload = R"({"k":"v"})";
  ev.attempts = 3;
  auto text = invocation_record(ev, "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST",
                                "RetriesExhausted", 1573755365568, true, true,
                                R"({"errorMessage":"boom"})");
  simdjson::dom::parser p;
  simdjson::dom::element doc;
  REQUIRE_FALSE(p.parse(text).get(doc));
  CHECK(std::string_view{doc["version"]} == "1.0");
  CHECK(std::string_view{doc["timestamp"]} == "2019-11-14T18:16:05.568Z");
  CHECK(std::string_view{doc["requestContext"]["requestId"]} == "req-1");
  CHECK(std::string_view{doc["requestContext"]["functionArn"]}
        == "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST");
  CHECK(std::string_view{doc["requestContext"]["condition"]} == "RetriesExhausted");
  CHECK(int64_t{doc["requestContext"]["approximateInvokeCount"]} == 3);
  CHECK(std::string_view{doc["requestPayload"]["k"]} == "v");
  CHECK(int64_t{doc["responseContext"]["statusCode"]} == 200);
  CHECK(std::string_view{doc["responseContext"]["executedVersion"]} == "$LATEST");
  CHECK(std::string_view{doc["responseContext"]["functionError"]} == "Unhandled");
  CHECK(std::string_view{doc["responsePayload"]["errorMessage"]} == "boom");
}

TEST_CASE_FIXTURE(async_fixture, "async: a Nimbus message queue keeps a message until it is "
                                 "deleted") {
  start(timings());
  queued_event m;
  m.request_id = "msg-1";
  m.account_id = account;
  m.payload = R"({"hello":"queue"})";
  m.attributes = {{"RequestID", "req-9"}, {"ErrorCode", "200"}};
  auto id = ask<std::string>(*manager, send_atom::value, std::string{"dlq-1"}, m);
  REQUIRE(id);
  CHECK(*id == "msg-1");
  auto got = ask<std::vector<queued_event>>(*manager, receive_atom::value, std::string{account},
                                            std::string{"dlq-1"}, uint32_t{10});
  REQUIRE(got);
  REQUIRE(got->size() == 1);
  auto msg = got->front();
  CHECK(msg.payload == R"({"hello":"queue"})");
  CHECK(msg.attributes.at("RequestID") == "req-9");
  CHECK(msg.attributes.at("ErrorCode") == "200");
  // Received messages are invisible for a while: a second receive is empty
  // (and does not wait).
  auto again = ask<std::vector<queued_event>>(*manager, receive_atom::value, std::string{account},
                                              std::string{"dlq-1"}, uint32_t{10});
  REQUIRE(again);
  CHECK(again->empty());
  auto deleted = ask<bool>(*manager, complete_atom::value, std::string{account},
                           std::string{"dlq-1"}, msg.seq, msg.lease);
  REQUIRE(deleted);
  CHECK(*deleted);
  auto twice = ask<bool>(*manager, complete_atom::value, std::string{account},
                         std::string{"dlq-1"}, msg.seq, msg.lease);
  REQUIRE(twice);
  CHECK_FALSE(*twice);
  // Names are checked before they become directory names.
  auto bad = ask<std::string>(*manager, send_atom::value, std::string{"../escape"}, m);
  CHECK_FALSE(bad);
}

TEST_CASE_FIXTURE(async_fixture, "async: outcomes reach the destinations as AWS invocation "
                                 "records, failures the dead-letter queue") {
  create("bad");
  create("good");
  create("sink");
  calls->outcome["bad"] = "function_error";
  transport::lambda::event_invoke_update fail_cfg;
  fail_cfg.maximum_retry_attempts = 0;
  fail_cfg.on_failure = "arn:aws:lambda:us-east-1:123456789012:function:sink";
  REQUIRE(ask<storage::function_record>(registry, event_config_atom::value, std::string{account},
                                        std::string{"bad"}, fail_cfg));
  transport::lambda::configuration_patch dlq;
  dlq.dead_letter_target = "arn:aws:sqs:us-east-1:123456789012:bad-dlq";
  REQUIRE(ask<storage::function_record>(registry, update_config_atom::value,
                                        std::string{account}, std::string{"bad"}, dlq));
  transport::lambda::event_invoke_update ok_cfg;
  ok_cfg.on_success = "arn:aws:lambda:us-east-1:123456789012:function:sink";
  REQUIRE(ask<storage::function_record>(registry, event_config_atom::value, std::string{account},
                                        std::string{"good"}, ok_cfg));
  start(timings());
  auto bad_id = enqueue("bad", R"({"which":"bad"})");
  auto good_id = enqueue("good", R"({"which":"good"})");
  REQUIRE(eventually([&] { return calls->count("sink") == 2; }));
  CHECK(calls->count("bad") == 1); // MaximumRetryAttempts 0: no retry
  simdjson::dom::parser parser;
  std::map<std::string, std::string> condition_of;
  for (auto& run : calls->of("sink")) {
    simdjson::dom::element doc;
    REQUIRE_FALSE(parser.parse(run.payload).get(doc));
    auto ctx = doc["requestContext"];
    auto id = std::string{std::string_view{ctx["requestId"]}};
    condition_of[id] = std::string{std::string_view{ctx["condition"]}};
    CHECK(int64_t{ctx["approximateInvokeCount"]} == 1);
    if (id == bad_id) {
      CHECK(std::string_view{doc["requestPayload"]["which"]} == "bad");
      CHECK(std::string_view{doc["responseContext"]["functionError"]} == "Unhandled");
      CHECK(std::string_view{doc["responsePayload"]["errorMessage"]} == "boom");
      CHECK(std::string_view{ctx["functionArn"]}
            == "arn:aws:lambda:us-east-1:123456789012:function:bad:$LATEST");
    } else {
      CHECK(std::string_view{doc["requestPayload"]["which"]} == "good");
      CHECK(bool{doc["responsePayload"]["ok"]});
    }
  }
  CHECK(condition_of[bad_id] == "RetriesExhausted");
  CHECK(condition_of[good_id] == "Success");
  // The dead-letter queue got the original event with AWS's attributes.
  std::vector<queued_event> dead;
  REQUIRE(eventually([&] {
    auto got = ask<std::vector<queued_event>>(*manager, receive_atom::value, std::string{account},
                                              std::string{"bad-dlq"}, uint32_t{10});
    if (got && !got->empty())
      dead = *got;
    return !dead.empty();
  }));
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].payload == R"({"which":"bad"})");
  CHECK(dead[0].attributes.at("RequestID") == bad_id);
  CHECK(dead[0].attributes.at("ErrorCode") == "200");
  CHECK(dead[0].attributes.at("ErrorMessage") == "boom");
  REQUIRE(eventually([&] {
    auto s = stats();
    return s.outcomes["RetriesExhausted"] == 1 && s.outcomes["Success"] == 3;
  }));
}
