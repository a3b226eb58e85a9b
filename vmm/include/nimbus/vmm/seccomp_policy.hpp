#pragma once

/// The seccomp filter of every sandbox (RELIABILITY.md SBX-3): allow by
/// default, deny the syscalls that widen the kernel attack surface or could
/// leave the sandbox (namespaces, mounts, tracing, keyrings, BPF, module and
/// kexec loading, io_uring, clock changes, TIOCSTI), with EPERM so runtimes see
/// a clean error. Calls from a foreign architecture (x32, i386) kill the
/// process, so the deny list cannot be sidestepped by switching ABI.

#include <linux/filter.h>

#include <string>
#include <vector>

namespace nimbus::vmm {

/// Names of the syscalls denied outright.
const std::vector<std::string>& denied_syscalls();

/// The filter as the kernel takes it: a classic BPF program.
using seccomp_program = std::vector<sock_filter>;

/// Builds the filter into `program`. Building takes a few hundred
/// microseconds (libseccomp generates and optimizes the program), so
/// nimbus-jail builds it once, before it waits for its work, and its runtime
/// child only loads it. Returns an error text, empty on success.
std::string compile_seccomp_policy(seccomp_program& program);

/// Loads a program from compile_seccomp_policy into the calling thread, as
/// libseccomp's seccomp_load does with its default attributes (no flags; the
/// caller must have no_new_privs set). Returns an error text, empty on
/// success.
std::string load_seccomp_program(const seccomp_program& program);

} // namespace nimbus::vmm
