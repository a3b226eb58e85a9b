#pragma once

// Kills and reaps a forked child when the test scope ends, also when a
// check fails first (crash tests fork a child and kill it at random).

#include <sys/types.h>
#include <sys/wait.h>

#include <csignal>

namespace nimbus::test {

struct child_guard {
  pid_t pid = -1;
  child_guard() = default;
  child_guard(const child_guard&) = delete;
  child_guard& operator=(const child_guard&) = delete;
  ~child_guard() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

} // namespace nimbus::test
