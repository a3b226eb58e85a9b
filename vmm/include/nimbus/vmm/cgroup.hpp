#pragma once

/// One control group per execution environment, on cgroup v1 (separate
/// memory, pids, cpu and freezer hierarchies, as on our machines) or the
/// unified cgroup v2 hierarchy.
///
/// Limits: memory (no swap), pids.max, and a CPU share proportional to memory
/// (AWS gives one vCPU at 1,769 MB). The group is frozen while the environment
/// is idle and killed as a whole (freeze, SIGKILL every member, thaw) on
/// timeout, OOM or shutdown. On v2 memory.oom.group makes the kernel kill the
/// whole group on OOM; on v1 the kernel kills one task and the owner, seeing
/// the OOM count rise, kills the rest.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace nimbus::vmm {

/// Resource limits of one group.
struct cgroup_limits {
  uint64_t memory_bytes = 128ull << 20;
  uint32_t pids_max = 1024;
  /// Relative CPU weight in v1 shares (1024 = one default task).
  uint32_t cpu_shares = 1024;
};

/// CPU shares for a memory size: 1024 shares per 1,769 MB, at least 2.
uint32_t cpu_shares_for_memory(uint64_t memory_bytes);

/// The cgroup layout of this machine.
class cgroup_layout {
public:
  /// Detects v1 or v2 from /proc/self/mountinfo and /proc/self/cgroup and
  /// places Nimbus groups under `<this process's group>/<prefix>`. Returns
  /// nothing (with `error` set) when a needed controller is missing.
  static std::optional<cgroup_layout> detect(const std::string& prefix, std::string& error);

  /// True on the unified v2 hierarchy.
  bool unified() const {
    return unified_;
  }

  /// Removes groups left empty by an earlier run that ended without cleaning
  /// up (kill -9), after thawing frozen ones (the sandboxes of a killed node
  /// die when thawed). Groups with members stay. Returns how many were
  /// removed. Call only while no other process uses the parent (a live
  /// node's new groups are empty until their sandbox joins).
  size_t remove_leftovers() const;

  /// The parent directory of all Nimbus groups for one v1 controller
  /// ("memory", "pids", "cpu", "freezer") or for v2 (controller ignored).
  std::string parent(const std::string& controller) const;

private:
  bool unified_ = false;
  /// v1: controller -> parent dir; v2: "" -> parent dir.
  std::vector<std::pair<std::string, std::string>> parents_;
};

/// A created control group. Not copyable; the owner removes it.
class cgroup {
public:
  /// Creates the group `name` with `limits`. Returns nothing (with `error`)
  /// on failure, having removed whatever it created.
  static std::optional<cgroup> create(const cgroup_layout& layout, const std::string& name,
                                      const cgroup_limits& limits, std::string& error);

  /// Removes the group (see remove()).
  ~cgroup() {
    remove();
  }
  cgroup(cgroup&&) = default;
  cgroup& operator=(cgroup&&) = default;
  cgroup(const cgroup&) = delete;
  cgroup& operator=(const cgroup&) = delete;

  /// The files a process writes its pid to in order to join the group (one
  /// per v1 hierarchy, one for v2).
  const std::vector<std::string>& procs_files() const {
    return procs_files_;
  }

  /// Changes the limits of an existing group. Returns an error text, empty on
  /// success.
  std::string set_limits(const cgroup_limits& limits);

  /// Stops every task of the group (freezer / cgroup.freeze).
  bool freeze();
  /// Resumes the group.
  bool thaw();
  /// Kills every task of the group and waits until it is empty (bounded).
  void kill_all();
  /// Peak memory use in bytes (0 if unknown).
  uint64_t peak_memory() const;
  /// Number of OOM kills in this group so far.
  uint64_t oom_kills() const;
  /// Current member pids.
  std::vector<pid_t> members() const;
  /// Kills everything and removes the group directories. Idempotent.
  void remove();

private:
  /// A descriptor that closes itself and moves with the group.
  struct owned_fd {
    int fd = -1;
    owned_fd() = default;
    owned_fd(owned_fd&& other) noexcept : fd(std::exchange(other.fd, -1)) {
    }
    owned_fd& operator=(owned_fd&& other) noexcept;
    ~owned_fd();
  };

  cgroup() = default;
  bool unified_ = false;
  /// The peak-memory file, kept open: it is read after every invocation.
  mutable owned_fd peak_fd_;
  /// v1: controller -> dir; v2: "" -> dir.
  std::vector<std::pair<std::string, std::string>> dirs_;
  std::vector<std::string> procs_files_;
  std::string dir(const std::string& controller) const;
};

} // namespace nimbus::vmm
