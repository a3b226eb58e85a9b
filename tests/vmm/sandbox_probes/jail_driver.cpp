// A stand-in worker for SBX-6 (tests/vmm/jail_test.cpp): starts one sandbox
// the way the worker does and then just blocks, so that the test can kill -9
// it and check that the sandbox dies with it.
//
// Usage: jail_driver <nimbus-jail> <root_dir> <code_dir> <cgroup.procs>...
// Runs "/var/task/probe sleepfork" (a runtime that forks a sleeping child and
// sleeps), whose output goes to our stdout, and prints "init <host pid>".

#include "nimbus/vmm/jail.hpp"

#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  // Never outlive the test, and never block for long.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::alarm(60);
  if (argc < 4) {
    std::fprintf(stderr, "usage: jail_driver <nimbus-jail> <root> <code> <procs>...\n");
    return 2;
  }
  nimbus::vmm::jail_spec spec;
  spec.id = "sbx6-driver";
  spec.root_dir = argv[2];
  spec.code_dir = argv[3];
  spec.argv = {"/var/task/probe", "sleepfork"};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.tmp_bytes = 4 << 20;
  for (int i = 4; i < argc; ++i)
    spec.cgroup_procs.emplace_back(argv[i]);
  std::string error;
  auto jail =
      nimbus::vmm::jail_process::start(argv[1], spec, 1, 2, std::chrono::seconds{10}, error);
  if (!jail) {
    std::printf("error %s\n", error.c_str());
    return 1;
  }
  if (!jail->go()) {
    std::printf("error go failed\n");
    return 1;
  }
  std::printf("init %d\n", static_cast<int>(jail->init_pid()));
  std::fflush(stdout);
  for (;;)
    ::pause();
}
