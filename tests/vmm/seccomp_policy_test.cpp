#include "nimbus/vmm/seccomp_policy.hpp"

#include <doctest/doctest.h>

#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

using namespace nimbus::vmm;

namespace {

// Runs `probe` in a forked child that loads `program` first; returns the
// child's exit status (or -1). Bit 0 set: loading failed.
int in_filtered_child(const seccomp_program& program, int (*probe)()) {
  pid_t child = ::fork();
  if (child < 0)
    return -1;
  if (child == 0) {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || !load_seccomp_program(program).empty())
      ::_exit(1);
    ::_exit(probe());
  }
  int status = 0;
  if (::waitpid(child, &status, 0) != child || !WIFEXITED(status))
    return -1;
  return WEXITSTATUS(status);
}

// One bit per expectation that failed (bit 0 is reserved for the load).
int denied_calls_fail_as_the_policy_says() {
  int failed = 0;
  errno = 0;
  if (::unshare(CLONE_NEWUTS) != -1 || errno != EPERM)
    failed |= 2;
  errno = 0;
  if (::syscall(SYS_clone3, nullptr, 0) != -1 || errno != ENOSYS)
    failed |= 4;
  errno = 0;
  if (::socket(AF_VSOCK, SOCK_STREAM, 0) != -1 || errno != EAFNOSUPPORT)
    failed |= 8;
  errno = 0;
  if (::syscall(SYS_personality, 0xffffffffUL) != -1 || errno != EPERM)
    failed |= 16;
  // Allowed calls still work: a pipe, and a plain fork.
  int fds[2];
  if (::pipe(fds) != 0)
    failed |= 32;
  pid_t grandchild = ::fork();
  if (grandchild == 0)
    ::_exit(0);
  int status = 0;
  if (grandchild < 0 || ::waitpid(grandchild, &status, 0) != grandchild)
    failed |= 64;
  return failed;
}

int unshare_allowed() {
  return ::unshare(CLONE_NEWUTS) == 0 || errno != EPERM ? 0 : 2;
}

} // namespace

TEST_CASE("seccomp policy: built once, loaded in many processes, it denies what it lists") {
  seccomp_program program;
  auto err = compile_seccomp_policy(program);
  REQUIRE_MESSAGE(err.empty(), err);
  REQUIRE(!program.empty());
  CHECK(program.size() <= BPF_MAXINSNS);
  // The same program each time: nothing in it depends on the caller.
  seccomp_program again;
  REQUIRE(compile_seccomp_policy(again).empty());
  REQUIRE(again.size() == program.size());
  CHECK(std::memcmp(again.data(), program.data(), program.size() * sizeof(sock_filter)) == 0);
  // Two children load the one program; each is filtered.
  CHECK(in_filtered_child(program, denied_calls_fail_as_the_policy_says) == 0);
  CHECK(in_filtered_child(program, denied_calls_fail_as_the_policy_says) == 0);
  // The parent never loaded it.
  if (::geteuid() == 0) {
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0)
      ::_exit(unshare_allowed());
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}

TEST_CASE("seccomp policy: an empty program is refused, not loaded") {
  CHECK(load_seccomp_program({}) == "no program");
}
