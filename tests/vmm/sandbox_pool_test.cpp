#include "nimbus/vmm/sandbox_pool.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

using namespace nimbus::vmm;
namespace fs = std::filesystem;

TEST_CASE("sandbox pool: a prepared helper runs a sandbox in its cgroup with new limits") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: sandboxes need root");
    return;
  }
  std::string error;
  auto layout = cgroup_layout::detect("nimbus-test-pool", error);
  REQUIRE_MESSAGE(layout, error);
  char tmpl[] = "/tmp/nimbus-sbxpool-XXXXXX";
  fs::path tmp = ::mkdtemp(tmpl);
  ::chmod(tmp.c_str(), 0755);
  fs::create_directories(tmp / "root");
  fs::create_directories(tmp / "code");
  ::chmod((tmp / "code").c_str(), 0755);
  {
    sandbox_pool pool{NIMBUS_JAIL_PATH, std::make_shared<cgroup_layout>(*layout), 2};
    for (int i = 0; i < 400 && pool.created() < 2; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    REQUIRE(pool.created() >= 2);
    auto prepared = pool.take();
    REQUIRE(prepared);
    // The helper has joined the group before anyone asked for it.
    CHECK(prepared->group.members().size() == 1);
    cgroup_limits limits;
    limits.memory_bytes = 96ull << 20;
    limits.pids_max = 32;
    REQUIRE(prepared->group.set_limits(limits).empty());
    // The limits set after the join are the group's.
    auto group_dir = layout->parent(layout->unified() ? "" : "pids");
    bool found = false;
    for (const auto& entry : fs::directory_iterator(group_dir))
      if (entry.path().filename().string().rfind("pool-", 0) == 0) {
        std::ifstream in{entry.path() / "pids.max"};
        std::string value;
        in >> value;
        if (value == "32")
          found = true;
      }
    CHECK(found);
    jail_spec spec;
    spec.id = "pool-test";
    spec.root_dir = (tmp / "root").string();
    spec.code_dir = (tmp / "code").string();
    spec.argv = {"/bin/sh", "-c", "cat /proc/self/cgroup; echo done"};
    REQUIRE_MESSAGE(prepared->jail->configure(spec, std::chrono::seconds{10}, error), error);
    auto members = prepared->group.members();
    CHECK(members.size() >= 2); // the helper and the sandbox's PID 1
    REQUIRE(prepared->jail->go());
    auto exit = prepared->jail->wait(std::chrono::seconds{10});
    REQUIRE(exit);
    CHECK(exit->exited);
    CHECK(exit->code == 0);
    std::string output;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(prepared->output_fd, buf, sizeof buf)) > 0)
      output.append(buf, static_cast<size_t>(n));
    ::close(prepared->output_fd);
    CHECK(output.find("done") != std::string::npos);
    CHECK(prepared->group.peak_memory() > 0);
  }
  fs::remove_all(tmp);
}

TEST_CASE("cgroups: a frozen group left by a killed node is thawed, so its tasks die, and removed") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: cgroups need root");
    return;
  }
  std::string error;
  auto layout = cgroup_layout::detect("nimbus-test-leftover", error);
  REQUIRE_MESSAGE(layout, error);
  auto name = "left-" + std::to_string(::getpid());
  auto group = cgroup::create(*layout, name, cgroup_limits{}, error);
  REQUIRE_MESSAGE(group, error);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  for (const auto& procs : group->procs_files()) {
    std::ofstream out{procs};
    out << child;
  }
  CHECK(group->members() == std::vector<pid_t>{child});
  REQUIRE(group->freeze());
  // As when its node died: the SIGKILL waits while the group is frozen.
  ::kill(child, SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds{50});
  int status = 0;
  CHECK(::waitpid(child, &status, WNOHANG) == 0);
  layout->remove_leftovers();
  pid_t reaped = 0;
  for (int i = 0; i < 200 && reaped == 0; ++i) {
    reaped = ::waitpid(child, &status, WNOHANG);
    if (reaped == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
  CHECK(reaped == child);
  CHECK(WIFSIGNALED(status));
  // Once empty, the group is removed (by this or a second pass).
  layout->remove_leftovers();
  CHECK_FALSE(fs::exists(layout->parent(layout->unified() ? "" : "pids") + "/" + name));
}
