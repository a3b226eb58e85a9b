// Sandbox benchmarks (issue: execution environments).
//
//   launch:   time from "start a sandbox" to the first byte its process writes,
//             for nimbus-jail and for bubblewrap with equivalent namespaces
//             (pid, mount, net, ipc, uts, cgroup) and mounts, same program.
//             nimbus: from nothing (makes and joins a cgroup, which bubblewrap
//             does not do at all); nimbus pooled: as the cold path does it,
//             from a helper prepared in its cgroup and a prepared netns.
//   cold:     WORKER create -> environment ready (runtime's first /next), for a
//             C `provided` runtime, python and node.
//   warm:     WORKER invoke round trip on a warm C runtime environment.
//
// Prints one JSON object with medians (and p90) in microseconds, plus the ratio
// nimbus/bubblewrap measured in the same run. Needs root.
//
//   sandbox_bench <iterations> <jail-helper> <ready-probe> <test-runtime> <runtimes-dir>

#include "nimbus/actors/worker.hpp"
#include "nimbus/config/logging.hpp"
#include "nimbus/vmm/cgroup.hpp"
#include "nimbus/vmm/jail.hpp"
#include "nimbus/vmm/netns_pool.hpp"
#include "nimbus/vmm/sandbox_pool.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

using namespace nimbus;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

struct stats {
  double p50 = 0, p90 = 0;
};

stats summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty())
    return {};
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 9 / 10)]};
}

double since_us(clock_type::time_point t) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - t).count();
}

// Reads until the first byte arrives on fd.
bool wait_byte(int fd) {
  char c;
  return ::read(fd, &c, 1) == 1;
}

double launch_nimbus(const std::string& helper, const vmm::cgroup_layout& layout,
                     const fs::path& tmp, const fs::path& code, int i) {
  auto start = clock_type::now();
  std::string error;
  auto group = vmm::cgroup::create(layout, "bench-" + std::to_string(i), {}, error);
  if (!group)
    throw std::runtime_error(error);
  auto root = tmp / ("root-" + std::to_string(i));
  fs::create_directories(root);
  vmm::jail_spec spec;
  spec.id = "bench";
  spec.root_dir = root.string();
  spec.code_dir = code.string();
  spec.argv = {"/var/task/ready_probe"};
  spec.cgroup_procs = group->procs_files();
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe");
  auto jail = vmm::jail_process::start(helper, spec, out[1], out[1], std::chrono::seconds{10},
                                       error);
  if (!jail)
    throw std::runtime_error(error);
  jail->go();
  ::close(out[1]);
  wait_byte(out[0]);
  double us = since_us(start);
  ::close(out[0]);
  jail.reset();
  group.reset();
  fs::remove(root);
  return us;
}

// The same launch as Nimbus's cold path does it: a helper prepared ahead of
// time in its cgroup (sandbox_pool) and a prepared network namespace
// (netns_pool); timed from taking them.
double launch_nimbus_pooled(vmm::sandbox_pool& sandboxes, vmm::netns_pool& netns,
                            const fs::path& tmp, const fs::path& code, int i) {
  // Let the pools refill between samples, as they do between cold starts.
  for (int k = 0; k < 200 && sandboxes.created() < static_cast<size_t>(i) + 5; ++k)
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  auto start = clock_type::now();
  auto prepared = sandboxes.take();
  if (!prepared)
    throw std::runtime_error("sandbox pool empty");
  if (auto problem = prepared->group.set_limits({}); !problem.empty())
    throw std::runtime_error(problem);
  auto root = tmp / ("proot-" + std::to_string(i));
  fs::create_directories(root);
  vmm::jail_spec spec;
  spec.id = "bench";
  spec.root_dir = root.string();
  spec.code_dir = code.string();
  spec.argv = {"/var/task/ready_probe"};
  spec.netns = netns.take();
  std::string error;
  if (!prepared->jail->configure(spec, std::chrono::seconds{10}, error))
    throw std::runtime_error(error);
  prepared->jail->go();
  wait_byte(prepared->output_fd);
  double us = since_us(start);
  ::close(prepared->output_fd);
  prepared->jail.reset();
  if (!spec.netns.empty())
    vmm::netns_pool::release(spec.netns);
  fs::remove(root);
  return us;
}

double launch_bwrap(const fs::path& code) {
  auto start = clock_type::now();
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe");
  std::vector<std::string> args = {
    "/usr/bin/bwrap", "--unshare-all", "--unshare-cgroup", "--die-with-parent",
    "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
    "--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache", "--ro-bind", code.string(), "/var/task",
    "--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc", "--chdir", "/var/task",
    "--uid", "10001", "--gid", "10001", "--cap-drop", "ALL", "--new-session",
    "/var/task/ready_probe"};
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  pid_t pid;
  char* envp[] = {nullptr};
  if (::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp) != 0)
    throw std::runtime_error("spawn bwrap");
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  wait_byte(out[0]);
  double us = since_us(start);
  ::close(out[0]);
  int status;
  ::waitpid(pid, &status, 0);
  return us;
}

struct system_config : caf::actor_system_config {
  system_config() {
    set("scheduler.max-threads", 2);
    set("work-stealing.moderate-poll-attempts", 0);
    set("logger.verbosity", caf::atom("quiet"));
    add_message_types<caf::id_block::nimbus>();
  }
};

} // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::cerr << "usage: sandbox_bench <iterations> <jail-helper> <ready-probe> <test-runtime> "
                 "<runtimes-dir>\n";
    return 2;
  }
  int n = std::atoi(argv[1]);
  if (getenv("BENCH_VERBOSE"))
    nimbus::config::set_log_level("debug");
  std::string helper = argv[2];
  char tmpl[] = "/tmp/nimbus-bench-XXXXXX";
  fs::path tmp = ::mkdtemp(tmpl);
  ::chmod(tmp.c_str(), 0755);
  auto code = tmp / "code";
  fs::create_directories(code);
  fs::copy_file(argv[3], code / "ready_probe");
  fs::copy_file(argv[4], code / "bootstrap");
  ::chmod(code.c_str(), 0755);
  ::chmod((code / "ready_probe").c_str(), 0755);
  ::chmod((code / "bootstrap").c_str(), 0755);
  auto pycode = tmp / "pycode";
  fs::create_directories(pycode);
  {
    std::ofstream{pycode / "app.py"} << "def handler(event, context):\n    return event\n";
    std::ofstream{pycode / "index.mjs"} << "export const handler = async (e) => e;\n";
  }
  ::chmod(pycode.c_str(), 0755);
  std::string error;
  auto layout = vmm::cgroup_layout::detect("nimbus-bench", error);
  if (!layout) {
    std::cerr << error << "\n";
    return 1;
  }
  // Interleave the two launchers so that machine noise hits both alike.
  std::vector<double> nimbus_launch, pooled_launch, bwrap_launch;
  launch_nimbus(helper, *layout, tmp, code, -1); // warm the page cache
  launch_bwrap(code);
  {
    auto shared_layout = std::make_shared<vmm::cgroup_layout>(*layout);
    vmm::sandbox_pool sandboxes{helper, shared_layout, 4};
    vmm::netns_pool netns{(tmp / "launch-netns").string(), 4};
    for (int i = 0; i < n; ++i) {
      nimbus_launch.push_back(launch_nimbus(helper, *layout, tmp, code, i));
      pooled_launch.push_back(launch_nimbus_pooled(sandboxes, netns, tmp, code, i));
      bwrap_launch.push_back(launch_bwrap(code));
    }
  }
  auto nl = summarize(nimbus_launch);
  auto pl = summarize(pooled_launch);
  auto bl = summarize(bwrap_launch);

  system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  worker_config wc;
  wc.host.jail_helper = helper;
  wc.host.runtimes_dir = argv[5];
  wc.host.jails_dir = (tmp / "jails").string();
  fs::create_directories(tmp / "jails");
  wc.host.cgroups = std::make_shared<vmm::cgroup_layout>(*layout);
  if (!getenv("BENCH_NO_POOLS")) {
    wc.host.netns = std::make_shared<vmm::netns_pool>((tmp / "netns").string(), 8);
    wc.host.sandboxes = std::make_shared<vmm::sandbox_pool>(helper, wc.host.cgroups, 4);
  }
  wc.memory_total_mb = 8192;
  auto worker = spawn_worker(sys, wc);
  int counter = 0;
  auto cold = [&](const std::string& runtime, const std::string& handler, const fs::path& dir,
                  int count) {
    std::vector<double> v;
    for (int i = 0; i < count; ++i) {
      environment_spec s;
      s.environment_id = "bench-env-" + std::to_string(++counter);
      s.function_name = "bench";
      s.function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench";
      s.runtime = runtime;
      s.handler = handler;
      s.code_dir = dir.string();
      auto start = clock_type::now();
      bool ok = false;
      self->request(worker, std::chrono::seconds{30}, create_atom::value, s)
        .receive([&](environment_ready& r) {
                   ok = true;
                   if (getenv("BENCH_VERBOSE"))
                     std::cerr << runtime << " sandbox " << r.sandbox_us << "us init " << r.init_us
                               << "us\n";
                 },
                 [&](caf::error& e) { std::cerr << "create failed: " << sys.render(e) << "\n"; });
      if (ok)
        v.push_back(since_us(start));
      self->request(worker, std::chrono::seconds{30}, destroy_atom::value, s.environment_id)
        .receive([](bool) {}, [](caf::error&) {});
    }
    return summarize(v);
  };
  auto c_cold = cold("provided.al2023", "bootstrap", code, n);
  auto py_cold = cold("python3.11", "app.handler", pycode, std::max(3, n / 4));
  auto node_cold = cold("nodejs20.x", "index.handler", pycode, std::max(3, n / 4));

  // Warm round trips on one C environment.
  environment_spec s;
  s.environment_id = "bench-warm";
  s.function_name = "bench";
  s.runtime = "provided.al2023";
  s.handler = "bootstrap";
  s.code_dir = code.string();
  self->request(worker, std::chrono::seconds{30}, create_atom::value, s)
    .receive([](environment_ready&) {}, [](caf::error&) {});
  std::vector<double> warm;
  for (int i = 0; i < n * 10; ++i) {
    invocation_request req;
    req.request_id = "r" + std::to_string(i);
    req.payload = R"({"action":"echo"})";
    auto start = clock_type::now();
    self->request(worker, std::chrono::seconds{30}, invoke_atom::value, s.environment_id, req)
      .receive([&](invocation_result&) { warm.push_back(since_us(start)); },
               [](caf::error&) {});
  }
  auto w = summarize(warm);
  self->send_exit(worker, caf::exit_reason::user_shutdown);

  std::cout << "{\n"
            << "  \"iterations\": " << n << ",\n"
            << "  \"launch_nimbus_us\": {\"p50\": " << nl.p50 << ", \"p90\": " << nl.p90 << "},\n"
            << "  \"launch_bwrap_us\": {\"p50\": " << bl.p50 << ", \"p90\": " << bl.p90 << "},\n"
            << "  \"launch_nimbus_pooled_us\": {\"p50\": " << pl.p50 << ", \"p90\": " << pl.p90
            << "},\n"
            << "  \"launch_ratio_nimbus_over_bwrap\": " << (bl.p50 > 0 ? nl.p50 / bl.p50 : 0)
            << ",\n"
            << "  \"launch_ratio_pooled_over_bwrap\": " << (bl.p50 > 0 ? pl.p50 / bl.p50 : 0)
            << ",\n"
            << "  \"cold_start_c_us\": {\"p50\": " << c_cold.p50 << ", \"p90\": " << c_cold.p90
            << "},\n"
            << "  \"cold_start_python_us\": {\"p50\": " << py_cold.p50 << ", \"p90\": "
            << py_cold.p90 << "},\n"
            << "  \"cold_start_node_us\": {\"p50\": " << node_cold.p50 << ", \"p90\": "
            << node_cold.p90 << "},\n"
            << "  \"warm_round_trip_c_us\": {\"p50\": " << w.p50 << ", \"p90\": " << w.p90
            << "}\n}\n";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  return 0;
}
