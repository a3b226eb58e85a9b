#include "nimbus/vmm/seccomp_policy.hpp"

#include <seccomp.h>

#include <linux/seccomp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace nimbus::vmm {

const std::vector<std::string>& denied_syscalls() {
  static const std::vector<std::string> names = {
    // Mount table and root changes: the sandbox's view of files is fixed.
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
    // New namespaces or joining others'.
    "unshare", "setns",
    // Tracing and reading other processes' memory.
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    // Kernel keyrings.
    "add_key", "keyctl", "request_key",
    // Large kernel attack surfaces.
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "open_by_handle_at", "name_to_handle_at",
    // Kernel replacement and modules.
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    // Machine-wide state.
    "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "iopl", "ioperm", "quotactl", "nfsservctl", "lookup_dcookie", "vhangup",
    "syslog", "personality",
  };
  return names;
}

namespace {

// The filter's rules in a libseccomp context (released by the caller), or an
// error text.
std::string build(scmp_filter_ctx& out) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr)
    return "seccomp_init failed";
  auto fail = [&](const std::string& what, int rc) {
    seccomp_release(ctx);
    return what + ": " + std::strerror(-rc);
  };
  // Syscalls of another ABI kill the process.
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); rc != 0)
    return fail("seccomp badarch", rc);
  const auto deny = SCMP_ACT_ERRNO(EPERM);
  for (const auto& name : denied_syscalls()) {
    int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr == __NR_SCMP_ERROR)
      continue; // not on this architecture
    if (int rc = seccomp_rule_add(ctx, deny, nr, 0); rc != 0)
      return fail("seccomp rule " + name, rc);
  }
  // clone with any namespace flag is denied; plain clone (threads, fork) is
  // allowed. clone3 passes its flags in memory a filter cannot read, so it
  // fails with ENOSYS and libc falls back to clone.
  // One rule per flag: a rule matches when (flags & flag) == flag.
  for (uint64_t flag : {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
                        CLONE_NEWNET, CLONE_NEWCGROUP})
    if (int rc = seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
        rc != 0)
      return fail("seccomp rule clone", rc);
  if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0); rc != 0)
    return fail("seccomp rule clone3", rc);
  // vsock is not confined by the network namespace: on a VM it is a route to
  // the hypervisor (CID 2). Answer as a kernel without vsock would. The
  // family is an int to the kernel: compare the low 32 bits only.
  if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                                SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, AF_VSOCK));
      rc != 0)
    return fail("seccomp rule socket", rc);
  // TIOCSTI pushes input into another terminal. The kernel compares only the
  // low 32 bits of the request, so the filter does too (the "high bits"
  // variant sets bits above 32 to slip past a full-width comparison).
  if (int rc = seccomp_rule_add(ctx, deny, SCMP_SYS(ioctl), 1,
                                SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI));
      rc != 0)
    return fail("seccomp rule ioctl", rc);
  out = ctx;
  return {};
}

} // namespace

std::string compile_seccomp_policy(seccomp_program& program) {
  scmp_filter_ctx ctx = nullptr;
  if (auto err = build(ctx); !err.empty())
    return err;
  // libseccomp 2.5 exports the program only to a file descriptor.
  int fd = ::memfd_create("nimbus-seccomp", MFD_CLOEXEC);
  if (fd < 0) {
    seccomp_release(ctx);
    return std::string{"memfd_create: "} + std::strerror(errno);
  }
  int rc = seccomp_export_bpf(ctx, fd);
  seccomp_release(ctx);
  std::string err;
  struct stat st {};
  if (rc != 0)
    err = std::string{"seccomp_export_bpf: "} + std::strerror(-rc);
  else if (::fstat(fd, &st) != 0)
    err = std::string{"fstat: "} + std::strerror(errno);
  else if (st.st_size <= 0 || st.st_size % sizeof(sock_filter) != 0 ||
           st.st_size / sizeof(sock_filter) > BPF_MAXINSNS)
    err = "the exported program has " + std::to_string(st.st_size) + " bytes";
  if (err.empty()) {
    program.resize(static_cast<size_t>(st.st_size) / sizeof(sock_filter));
    auto want = static_cast<size_t>(st.st_size);
    size_t done = 0;
    while (done < want) {
      auto n = ::pread(fd, reinterpret_cast<char*>(program.data()) + done, want - done,
                       static_cast<off_t>(done));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        err = n < 0 ? std::string{"read: "} + std::strerror(errno) : "short read";
        break;
      }
      done += static_cast<size_t>(n);
    }
  }
  ::close(fd);
  if (!err.empty())
    program.clear();
  return err;
}

std::string load_seccomp_program(const seccomp_program& program) {
  if (program.empty())
    return "no program";
  sock_fprog prog{};
  prog.len = static_cast<unsigned short>(program.size());
  prog.filter = const_cast<sock_filter*>(program.data());
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
    return std::string{"seccomp(SECCOMP_SET_MODE_FILTER): "} + std::strerror(errno);
  return {};
}

} // namespace nimbus::vmm
