// WORKER and ENVIRONMENT actors with real sandboxes: these tests need root,
// namespaces and cgroups, and run on a real actor system (environments are
// detached actors with their own threads and timers).

#include "nimbus/actors/error.hpp"
#include "nimbus/actors/worker.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>

#include <doctest/doctest.h>

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

using namespace nimbus;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

struct system_config : caf::actor_system_config {
  system_config() {
    set("scheduler.max-threads", 2);
    set("logger.verbosity", caf::atom("quiet"));
    add_message_types<caf::id_block::nimbus>();
  }
};

struct worker_fixture {
  fs::path tmp;
  fs::path code;
  system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  worker_actor worker;
  std::shared_ptr<transport::io_runner> runtime_io;
  bool usable = false;
  int counter = 0;

  worker_fixture() {
    if (::geteuid() != 0) {
      MESSAGE("skipped: the worker tests need root for namespaces and cgroups");
      return;
    }
    char tmpl[] = "/tmp/nimbus-worker-XXXXXX";
    tmp = ::mkdtemp(tmpl);
    code = tmp / "code";
    fs::create_directories(code);
    fs::create_directories(tmp / "jails");
    fs::copy_file(TEST_RUNTIME_PATH, code / "bootstrap");
    ::chmod(tmp.c_str(), 0755);
    ::chmod(code.c_str(), 0755);
    ::chmod((code / "bootstrap").c_str(), 0755);
    std::string error;
    auto layout = vmm::cgroup_layout::detect("nimbus-test-worker", error);
    REQUIRE_MESSAGE(layout, error);
    worker_config wc;
    wc.host.jail_helper = NIMBUS_JAIL_PATH;
    wc.host.runtimes_dir = NIMBUS_SOURCE_DIR "/runtimes";
    wc.host.jails_dir = (tmp / "jails").string();
    wc.host.cgroups = std::make_shared<vmm::cgroup_layout>(*layout);
    wc.host.init_timeout = 5s;
    // As nimbusd runs them: one io thread per CPU, pinned.
    runtime_io = transport::io_runner::start_sharded(0, true);
    wc.host.runtime_io = runtime_io;
    wc.memory_total_mb = 2048;
    REQUIRE(validate(wc).empty());
    worker = spawn_worker(sys, wc);
    usable = true;
  }

  ~worker_fixture() {
    if (usable)
      self->send_exit(worker, caf::exit_reason::user_shutdown);
    if (!tmp.empty()) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
    }
  }

  environment_spec spec(int32_t memory = 128, int32_t timeout = 3) {
    environment_spec s;
    s.environment_id = "env-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
    s.account_id = "123456789012";
    s.function_name = "f1";
    s.function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f1";
    s.runtime = "provided.al2023";
    s.handler = "bootstrap";
    s.code_dir = code.string();
    s.memory_mb = memory;
    s.timeout_s = timeout;
    return s;
  }

  template <class T, class... Ts>
  caf::expected<T> ask(std::chrono::seconds timeout, Ts&&... xs) {
    caf::expected<T> result{caf::sec::request_timeout};
    self->request(worker, timeout, std::forward<Ts>(xs)...)
      .receive([&](T& x) { result = std::move(x); }, [&](caf::error& e) { result = std::move(e); });
    return result;
  }

  caf::expected<invocation_result> invoke(const std::string& env, std::string payload) {
    invocation_request req;
    req.request_id = "req-" + std::to_string(++counter);
    req.payload = std::move(payload);
    req.trace_id = "Root=1-00000000-000000000000000000000000;Sampled=0";
    return ask<invocation_result>(60s, invoke_atom::value, env, req);
  }
};

} // namespace

TEST_CASE_FIXTURE(worker_fixture, "worker: create, invoke warm, destroy") {
  if (!usable)
    return;
  auto s = spec();
  auto ready = ask<environment_ready>(30s, create_atom::value, s);
  REQUIRE_MESSAGE(ready, sys.render(ready.error()));
  CHECK(ready->sandbox_us > 0);
  CHECK(ready->init_us > 0);
  auto first = invoke(s.environment_id, R"({"action":"echo","n":1})");
  REQUIRE(first);
  CHECK(first->outcome == "success");
  CHECK(first->payload == R"({"action":"echo","n":1})");
  CHECK(first->log.find("START RequestId: " + first->request_id + " Version: $LATEST") == 0);
  CHECK(first->log.find("END RequestId: " + first->request_id) != std::string::npos);
  CHECK(first->log.find("Init Duration:") != std::string::npos);
  CHECK(first->log.find("Memory Size: 128 MB") != std::string::npos);
  auto second = invoke(s.environment_id, R"({"action":"log"})");
  REQUIRE(second);
  CHECK(second->outcome == "success");
  CHECK(second->log.find("hello from stdout " + second->request_id) != std::string::npos);
  CHECK(second->log.find("hello from stderr") != std::string::npos);
  CHECK(second->log.find("Init Duration:") == std::string::npos);
  CHECK(second->init_duration_us == 0);
  auto cap = ask<worker_capacity>(5s, capacity_atom::value);
  REQUIRE(cap);
  CHECK(cap->environments == 1);
  CHECK(cap->memory_used_mb == 128);
  auto destroyed = ask<bool>(30s, destroy_atom::value, s.environment_id);
  REQUIRE(destroyed);
  cap = ask<worker_capacity>(5s, capacity_atom::value);
  CHECK(cap->environments == 0);
  CHECK_FALSE(invoke(s.environment_id, "{}"));
}

TEST_CASE_FIXTURE(worker_fixture, "worker: a small function runs on its io shard's CPU, a large one anywhere") {
  if (!usable)
    return;
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(::sched_getaffinity(0, sizeof set, &set) == 0);
  std::string all;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &set))
      all += (all.empty() ? "" : ",") + std::to_string(cpu);
  auto cpus = [](int cpu) { return R"({"cpus":[)" + std::to_string(cpu) + "]}"; };
  // Under 1,769 MB (one vCPU on Lambda): bound to the CPU of the shard the
  // spec asks for, which serves its Runtime API.
  auto last = static_cast<int32_t>(runtime_io->shards() - 1);
  auto small = spec(128);
  small.shard = last;
  auto ready = ask<environment_ready>(30s, create_atom::value, small);
  REQUIRE_MESSAGE(ready, sys.render(ready.error()));
  CHECK(ready->shard == last);
  REQUIRE(runtime_io->covers_cpus());
  auto r = invoke(small.environment_id, R"({"action":"cpus"})");
  REQUIRE(r);
  CHECK(r->payload == cpus(runtime_io->cpu(static_cast<size_t>(last))));
  REQUIRE(ask<bool>(30s, destroy_atom::value, small.environment_id));
  // From 1,769 MB on a function may use more than one CPU: not bound.
  auto large = spec(1769);
  large.shard = 0;
  ready = ask<environment_ready>(30s, create_atom::value, large);
  REQUIRE_MESSAGE(ready, sys.render(ready.error()));
  CHECK(ready->shard == 0);
  r = invoke(large.environment_id, R"({"action":"cpus"})");
  REQUIRE(r);
  CHECK(r->payload == R"({"cpus":[)" + all + "]}");
  // No hint: a shard is chosen in turn.
  auto any = spec(128);
  REQUIRE(ask<bool>(30s, destroy_atom::value, large.environment_id));
  ready = ask<environment_ready>(30s, create_atom::value, any);
  REQUIRE_MESSAGE(ready, sys.render(ready.error()));
  REQUIRE(ready->shard >= 0);
  r = invoke(any.environment_id, R"({"action":"cpus"})");
  REQUIRE(r);
  CHECK(r->payload == cpus(runtime_io->cpu(static_cast<size_t>(ready->shard))));
}

TEST_CASE_FIXTURE(worker_fixture, "worker: a function error keeps the environment") {
  if (!usable)
    return;
  auto s = spec();
  REQUIRE(ask<environment_ready>(30s, create_atom::value, s));
  auto r = invoke(s.environment_id, R"({"action":"error"})");
  REQUIRE(r);
  CHECK(r->outcome == "function_error");
  CHECK(r->error_type == "TestError");
  CHECK(r->payload.find("it failed") != std::string::npos);
  CHECK_FALSE(r->environment_lost);
  auto again = invoke(s.environment_id, R"({"action":"echo"})");
  REQUIRE(again);
  CHECK(again->outcome == "success");
}

TEST_CASE_FIXTURE(worker_fixture, "worker: LAM-5 a timeout kills the whole sandbox") {
  if (!usable)
    return;
  auto s = spec(128, 1);
  REQUIRE(ask<environment_ready>(30s, create_atom::value, s));
  auto start = std::chrono::steady_clock::now();
  auto r = invoke(s.environment_id, R"({"action":"sleep","ms":5000})");
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(r);
  CHECK(r->outcome == "timeout");
  CHECK(r->payload.find("Task timed out after 1.00 seconds") != std::string::npos);
  CHECK(r->log.find("Task timed out after 1.00 seconds") != std::string::npos);
  CHECK(r->environment_lost);
  // Wide margin: the contract is timeout + 200 ms; shared CI machines are noisy.
  CHECK(took < 3s);
  auto cap = ask<worker_capacity>(5s, capacity_atom::value);
  CHECK(cap->environments == 0);
  CHECK_FALSE(invoke(s.environment_id, "{}"));
}

TEST_CASE_FIXTURE(worker_fixture, "worker: a runtime that exits mid-invoke is Runtime.ExitError") {
  if (!usable)
    return;
  auto s = spec();
  REQUIRE(ask<environment_ready>(30s, create_atom::value, s));
  auto r = invoke(s.environment_id, R"({"action":"exit","code":3})");
  REQUIRE(r);
  CHECK(r->outcome == "runtime_exit");
  CHECK(r->error_type == "Runtime.ExitError");
  CHECK_MESSAGE(r->payload.find("exit status 3") != std::string::npos, r->payload);
  CHECK(r->environment_lost);
}

TEST_CASE_FIXTURE(worker_fixture, "worker: LAM-6 out of memory is reported as such") {
  if (!usable)
    return;
  auto s = spec(64);
  REQUIRE(ask<environment_ready>(30s, create_atom::value, s));
  auto neighbour = spec();
  REQUIRE(ask<environment_ready>(30s, create_atom::value, neighbour));
  auto r = invoke(s.environment_id, R"({"action":"alloc","mb":300})");
  REQUIRE(r);
  CHECK(r->outcome == "out_of_memory");
  CHECK(r->error_type == "Runtime.OutOfMemory");
  CHECK(r->environment_lost);
  auto ok = invoke(neighbour.environment_id, R"({"action":"echo"})");
  REQUIRE(ok);
  CHECK(ok->outcome == "success");
}

TEST_CASE_FIXTURE(worker_fixture, "worker: INIT failures are reported and cleaned up") {
  if (!usable)
    return;
  auto s = spec();
  fs::create_directories(tmp / "empty");
  ::chmod((tmp / "empty").c_str(), 0755);
  s.code_dir = (tmp / "empty").string(); // no bootstrap to run
  auto r = ask<environment_ready>(30s, create_atom::value, s);
  REQUIRE_FALSE(r);
  CHECK(r.error() == ec::init_failed);
  CHECK(error_message(r.error()).find("Runtime.ExitError") != std::string::npos);
  auto cap = ask<worker_capacity>(5s, capacity_atom::value);
  CHECK(cap->environments == 0);
  s = spec();
  s.memory_mb = 4096; // more than the worker has
  auto full = ask<environment_ready>(30s, create_atom::value, s);
  REQUIRE_FALSE(full);
  CHECK(full.error() == ec::environment_unavailable);
}

TEST_CASE_FIXTURE(worker_fixture, "worker: python and node functions run in sandboxes") {
  if (!usable)
    return;
  auto dir = tmp / "langs";
  fs::create_directories(dir);
  std::ofstream{dir / "app.py"}
    << "import os\n"
       "def handler(event, context):\n"
       "    print('python log line')\n"
       "    return {'echo': event, 'fn': context.function_name,\n"
       "            'arn': context.invoked_function_arn, 'uid': os.getuid(),\n"
       "            'task_root': os.environ['LAMBDA_TASK_ROOT']}\n";
  std::ofstream{dir / "index.mjs"}
    << "export const handler = async (event, context) => {\n"
       "  console.log('node log line');\n"
       "  return { echo: event, fn: context.functionName, uid: process.getuid() };\n"
       "};\n";
  std::ofstream{dir / "broken.py"} << "import does_not_exist\n";
  for (auto f : {"app.py", "index.mjs", "broken.py"})
    ::chmod((dir / f).c_str(), 0644);
  ::chmod(dir.c_str(), 0755);

  auto py = spec(256, 10);
  py.runtime = "python3.11";
  py.handler = "app.handler";
  py.code_dir = dir.string();
  auto ready = ask<environment_ready>(30s, create_atom::value, py);
  REQUIRE_MESSAGE(ready, sys.render(ready.error()));
  auto r = invoke(py.environment_id, R"({"k":"v"})");
  REQUIRE(r);
  CHECK_MESSAGE(r->outcome == "success", r->payload);
  CHECK(r->payload.find(R"("echo": {"k": "v"})") != std::string::npos);
  CHECK(r->payload.find(R"("fn": "f1")") != std::string::npos);
  CHECK(r->payload.find(R"("uid": 100)") != std::string::npos);
  CHECK(r->payload.find(R"("task_root": "/var/task")") != std::string::npos);
  CHECK(r->log.find("python log line") != std::string::npos);

  auto node = spec(256, 10);
  node.runtime = "nodejs20.x";
  node.handler = "index.handler";
  node.code_dir = dir.string();
  ready = ask<environment_ready>(30s, create_atom::value, node);
  REQUIRE_MESSAGE(ready, sys.render(ready.error()));
  r = invoke(node.environment_id, R"({"k":"v"})");
  REQUIRE(r);
  CHECK_MESSAGE(r->outcome == "success", r->payload);
  CHECK(r->payload.find(R"("echo":{"k":"v"})") != std::string::npos);
  CHECK(r->payload.find(R"("uid":100)") != std::string::npos); // an unprivileged uid from the pool
  CHECK(r->log.find("node log line") != std::string::npos);

  auto broken = spec(128, 10);
  broken.runtime = "python3.11";
  broken.handler = "broken.handler";
  broken.code_dir = dir.string();
  auto failed = ask<environment_ready>(30s, create_atom::value, broken);
  REQUIRE_FALSE(failed);
  CHECK(failed.error() == ec::init_failed);
  CHECK(error_message(failed.error()).find("Runtime.ImportModuleError") != std::string::npos);
}

TEST_CASE_FIXTURE(worker_fixture, "worker: responses over 6 MB are Function.ResponseSizeTooLarge") {
  if (!usable)
    return;
  auto s = spec(256, 10);
  REQUIRE(ask<environment_ready>(30s, create_atom::value, s));
  auto ok = invoke(s.environment_id, R"({"action":"big","bytes":5000000})");
  REQUIRE(ok);
  CHECK(ok->outcome == "success");
  CHECK(ok->payload.size() == 5000002);
  auto big = invoke(s.environment_id, R"({"action":"big","bytes":7000000})");
  REQUIRE(big);
  CHECK(big->outcome == "function_error");
  CHECK(big->error_type == "Function.ResponseSizeTooLarge");
}

TEST_CASE_FIXTURE(worker_fixture, "worker: concurrent environments run as different users") {
  if (!usable)
    return;
  auto dir = tmp / "uid";
  fs::create_directories(dir);
  std::ofstream{dir / "app.py"} << "import os\ndef handler(e, c):\n    return os.getuid()\n";
  ::chmod((dir / "app.py").c_str(), 0644);
  ::chmod(dir.c_str(), 0755);
  std::set<std::string> uids;
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto s = spec(128, 10);
    s.runtime = "python3.11";
    s.handler = "app.handler";
    s.code_dir = dir.string();
    REQUIRE(ask<environment_ready>(30s, create_atom::value, s));
    auto r = invoke(s.environment_id, "{}");
    REQUIRE(r);
    uids.insert(r->payload);
    ids.push_back(s.environment_id);
  }
  CHECK(uids.size() == 3);
  CHECK(uids.count("0") == 0);
}

TEST_CASE_FIXTURE(worker_fixture, "worker: the official aws-lambda-ric client runs unmodified") {
  if (!usable)
    return;
  auto cache = std::string{NIMBUS_BINARY_DIR} + "/test-cache/aws-lambda-ric";
  auto install = std::string{NIMBUS_SOURCE_DIR} + "/tests/support/install_aws_lambda_ric.sh " + cache;
  if (std::system(install.c_str()) != 0) {
    MESSAGE("skipped: npm could not install aws-lambda-ric@4.0.2 (registry unreachable?)");
    return;
  }
  auto dir = tmp / "ric";
  fs::create_directories(dir);
  fs::copy(cache + "/node_modules", dir / "node_modules", fs::copy_options::recursive);
  std::ofstream{dir / "index.mjs"}
    << "export const handler = async (event, context) =>\n"
       "  ({ via: 'aws-lambda-ric', echo: event, id: context.awsRequestId });\n";
  std::ofstream{dir / "bootstrap"}
    << "#!/bin/sh\nexec /usr/bin/node /var/task/node_modules/aws-lambda-ric/index.mjs "
       "\"$_HANDLER\"\n";
  std::system(("chmod -R a+rX " + dir.string() + " && chmod 755 " + (dir / "bootstrap").string())
                .c_str());
  auto s = spec(512, 10);
  s.handler = "index.handler";
  s.code_dir = dir.string();
  auto ready = ask<environment_ready>(30s, create_atom::value, s);
  REQUIRE_MESSAGE(ready, sys.render(ready.error()));
  auto r = invoke(s.environment_id, R"({"x":1})");
  REQUIRE(r);
  CHECK_MESSAGE(r->outcome == "success", r->payload);
  CHECK(r->payload
        == R"({"via":"aws-lambda-ric","echo":{"x":1},"id":")" + r->request_id + "\"}");
  auto second = invoke(s.environment_id, R"({"x":2})");
  REQUIRE(second);
  CHECK(second->payload.find(R"("echo":{"x":2})") != std::string::npos);
}

TEST_CASE_FIXTURE(worker_fixture, "worker: each invocation gets its full timeout") {
  if (!usable)
    return;
  // The first invocation arms the environment's single timer; the second,
  // started a second later, must not be cut off when that timer fires.
  auto s = spec(128, 2);
  REQUIRE(ask<environment_ready>(30s, create_atom::value, s));
  REQUIRE(invoke(s.environment_id, R"({"action":"echo"})"));
  std::this_thread::sleep_for(1s);
  auto start = std::chrono::steady_clock::now();
  auto r = invoke(s.environment_id, R"({"action":"sleep","ms":5000})");
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(r);
  CHECK(r->outcome == "timeout");
  CHECK(took >= 1900ms);
  CHECK(took < 4s);
  // A quick invocation within its timeout after a slow one still succeeds.
  auto t = spec(128, 2);
  REQUIRE(ask<environment_ready>(30s, create_atom::value, t));
  auto slow = invoke(t.environment_id, R"({"action":"sleep","ms":1500})");
  REQUIRE(slow);
  CHECK(slow->outcome == "success");
  auto slow2 = invoke(t.environment_id, R"({"action":"sleep","ms":1500})");
  REQUIRE(slow2);
  CHECK(slow2->outcome == "success");
}
