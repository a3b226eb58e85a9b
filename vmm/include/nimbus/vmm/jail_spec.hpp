#pragma once

/// What the nimbus-jail helper needs to build one sandbox, and its wire form.
///
/// The worker writes the spec as one JSON document into a pipe that becomes
/// the helper's fd 3 (never argv or the environment: those are visible to
/// other host users in /proc, and the spec carries the function's environment
/// variables).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::vmm {

/// Fixed descriptor numbers in the nimbus-jail process.
inline constexpr int jail_spec_fd = 3;    ///< spec JSON, read to EOF
inline constexpr int jail_status_fd = 4;  ///< status lines to the worker
inline constexpr int jail_control_fd = 5; ///< "go" from the worker; EOF = worker gone

/// One sandbox.
struct jail_spec {
  /// Environment id (used in messages and as the hostname).
  std::string id;
  /// An empty host directory the sandbox root is assembled on.
  std::string root_dir;
  /// If set, a directory to use as the root file system (read-only) instead
  /// of the host's /usr, /lib, /bin, /sbin.
  std::string rootfs;
  /// Host directory mounted read-only at /var/task.
  std::string code_dir;
  /// Host directory mounted read-only at /var/runtime (may be empty).
  std::string runtime_dir;
  /// Command run inside, as the unprivileged user, in /var/task.
  std::vector<std::string> argv;
  /// Its complete environment, "KEY=VALUE".
  std::vector<std::string> env;
  /// Unprivileged user and group inside.
  uint32_t uid = 10001;
  uint32_t gid = 10001;
  /// Size of the /tmp tmpfs (also RLIMIT_FSIZE).
  uint64_t tmp_bytes = 512ull << 20;
  /// RLIMIT_NOFILE.
  uint32_t nofile = 1024;
  /// cgroup.procs files the sandbox joins before it unshares anything.
  std::vector<std::string> cgroup_procs;
  /// A prepared network namespace (file of a netns_pool) to join instead of
  /// creating one; empty: create a new one.
  std::string netns;
};

/// Serializes a spec to JSON.
std::string to_json(const jail_spec& spec);

/// Parses a spec; nothing (with `error`) if malformed.
std::optional<jail_spec> jail_spec_from_json(std::string_view json, std::string& error);

} // namespace nimbus::vmm
