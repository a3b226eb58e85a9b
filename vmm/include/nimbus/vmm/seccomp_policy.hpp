#pragma once

/// The seccomp filter of every sandbox (RELIABILITY.md SBX-3): allow by
/// default, deny the syscalls that widen the kernel attack surface or could
/// leave the sandbox (namespaces, mounts, tracing, keyrings, BPF, module and
/// kexec loading, io_uring, clock changes, TIOCSTI), with EPERM so runtimes see
/// a clean error. Calls from a foreign architecture (x32, i386) kill the
/// process, so the deny list cannot be sidestepped by switching ABI.

#include <string>
#include <vector>

namespace nimbus::vmm {

/// Names of the syscalls denied outright.
const std::vector<std::string>& denied_syscalls();

/// Builds the filter and loads it into the calling thread (which must have
/// no_new_privs set). Returns an error text, empty on success.
std::string load_seccomp_policy();

} // namespace nimbus::vmm
