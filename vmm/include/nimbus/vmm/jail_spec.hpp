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

/// The PATH an image-root runtime's bare argv[0] is looked up in when
/// jail_spec::env sets none (the default of Docker and of the Lambda base
/// images).
inline constexpr const char* jail_default_path =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One sandbox, in one of two modes:
///  - zip mode (image_root empty): the root is the host's /usr (or `rootfs`),
///    a minimal /etc, the code at /var/task and Nimbus's bootstraps at
///    /var/runtime;
///  - image-root mode (image_root set): the root is a container image's own
///    file system, read-only, with no host directory in it (see
///    vmm/src/jail_main.cpp, step 5).
/// Both get the same /tmp, /dev, /proc, namespaces, cgroups and limits.
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
  /// Image-root mode: the unpacked (mounted) image, read-only; every
  /// top-level entry is bound into the sandbox's root. Empty: zip mode. Needs
  /// an empty rootfs, code_dir and runtime_dir.
  std::string image_root;
  /// Directory the runtime starts in, as seen inside; empty: /var/task in zip
  /// mode, / in image-root mode. A missing one fails the sandbox's setup.
  std::string workdir;
  /// Command run inside, as the unprivileged user, in `workdir`. In
  /// image-root mode an argv[0] without '/' is looked up in the PATH of
  /// `env` (else jail_default_path), as execvpe does; in zip mode argv[0] is
  /// executed as given.
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
  /// The CPU the runtime (and every process it starts) is bound to, or -1
  /// for any CPU the helper may use. The worker binds a small function to the
  /// CPU of the io thread that serves its Runtime API (see
  /// transport::io_runner).
  int32_t cpu = -1;
};

/// The directory the runtime starts in (workdir, or the mode's default).
std::string effective_workdir(const jail_spec& spec);

/// Checks a spec before it is used: unprivileged ids, a command, and, in
/// image-root mode, an absolute existing directory other than the host's
/// root as image_root with no zip-mode directories beside it; workdir, if
/// set, absolute. Returns the problem, or empty if the spec is usable. Looks
/// at the file system (image_root) of the caller's mount namespace.
std::string validate(const jail_spec& spec);

/// Serializes a spec to JSON.
std::string to_json(const jail_spec& spec);

/// Parses and validates a spec; nothing (with `error`) if malformed or
/// invalid. image_root and workdir may be absent (empty).
std::optional<jail_spec> jail_spec_from_json(std::string_view json, std::string& error);

} // namespace nimbus::vmm
