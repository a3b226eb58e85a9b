#pragma once

/// The ENVIRONMENT actor: one execution environment, i.e. one sandbox (vmm
/// jail) with one runtime in it, and the Lambda Runtime API server it talks
/// to (transport::runtime_api on 127.0.0.1:9001 inside the sandbox's network
/// namespace).
///
/// Lifecycle: INIT starts the sandbox and waits for the runtime's first /next
/// (limit: init_timeout). INVOKE thaws the sandbox, hands over one event,
/// and waits for the answer until the function's timeout; then it kills the
/// whole sandbox and reports "Task timed out after N.00 seconds". A runtime
/// that exits mid-invoke is Runtime.ExitError, or Runtime.OutOfMemory when
/// its cgroup counted an OOM kill; the environment is gone after any of
/// these. A sandbox idle for `freeze_after` is frozen until its next
/// invocation (one that was in steady use is checked less often, so it may
/// stay thawed for up to 16 x `freeze_after` after its last invocation: a
/// timer per invocation would cost every warm invoke a wake-up of CAF's
/// clock thread). SHUTDOWN sends SIGTERM,
/// waits 2 s, kills, and removes the cgroup.
///
/// The actor runs on the scheduler and never blocks there: making and
/// removing the sandbox run on the worker's sandbox threads, and the Runtime
/// API server, the runtime's output pipe and the sandbox's exit are served by
/// the worker's shared io threads (host.runtime_io). Output is framed per
/// invocation with START, END and REPORT lines; what the runtime wrote before
/// it answered is read at the moment the answer arrives, so it is never cut
/// off and no invocation waits for a reader.

#include "nimbus/actors/interfaces.hpp"
#include "nimbus/transport/io_runner.hpp"
#include "nimbus/vmm/cgroup.hpp"
#include "nimbus/vmm/netns_pool.hpp"
#include "nimbus/vmm/sandbox_pool.hpp"

#include <caf/fwd.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace nimbus::vmm {
class image_library;
} // namespace nimbus::vmm

namespace nimbus {

/// Host settings every environment of a worker shares.
struct environment_host_config {
  /// Path of the nimbus-jail helper.
  std::string jail_helper;
  /// Host directory with Nimbus's runtime bootstraps (mounted at /var/runtime).
  std::string runtimes_dir;
  /// Directory under which each sandbox gets its (empty) root directory.
  std::string jails_dir;
  /// Unpacked code, one directory per code hash, shared by environments.
  std::string code_cache_dir;
  /// Code images, mounted (lazily) while environments use them; null: code
  /// is unpacked from the zip into code_cache_dir.
  std::shared_ptr<vmm::image_library> images;
  /// Limit for unpacking.
  uint64_t code_size_unzipped = 250ull << 20;
  /// cgroup layout of this host.
  std::shared_ptr<vmm::cgroup_layout> cgroups;
  /// Prepared network namespaces (may be null).
  std::shared_ptr<vmm::netns_pool> netns;
  /// Sandbox helpers started ahead of time in their cgroups (may be null).
  std::shared_ptr<vmm::sandbox_pool> sandboxes;
  /// io threads shared by the Runtime APIs, log pipes and exit watches of
  /// all environments of the worker (one is started when null).
  std::shared_ptr<transport::io_runner> runtime_io;
  /// Long-lived threads for the blocking work of making and removing
  /// sandboxes (one set is started when null). Long-lived on purpose: a
  /// sandbox helper dies with the thread that started it (PDEATHSIG).
  std::shared_ptr<transport::io_runner> sandbox_threads;
  /// Unprivileged uid/gid of the runtimes.
  uint32_t uid = 10001;
  uint32_t gid = 10001;
  /// Functions with less memory than this run on one CPU: the CPU of the
  /// runtime_io shard that serves their Runtime API, when runtime_io has a
  /// pinned shard on every CPU (io_runner::covers_cpus). Lambda gives a
  /// function one full vCPU at 1,769 MB; 0 pins none.
  int32_t pin_below_mb = 1769;
  /// Limit for INIT.
  std::chrono::milliseconds init_timeout{10'000};
  /// Grace period between SIGTERM and SIGKILL at shutdown.
  std::chrono::milliseconds shutdown_grace{2'000};
  /// An environment idle this long is frozen (back-to-back invocations skip
  /// the freeze and thaw).
  std::chrono::milliseconds freeze_after{50};
  /// The idle check's interval doubles, up to this many times
  /// `freeze_after`, while it keeps finding the sandbox in use.
  static constexpr int idle_check_limit = 16;
};

struct environment_state;

/// The ENVIRONMENT behavior.
environment_actor::behavior_type
environment(environment_actor::stateful_pointer<environment_state> self,
            environment_host_config host, environment_spec spec);

/// Spawns an ENVIRONMENT.
environment_actor spawn_environment(caf::actor_system& sys, environment_host_config host,
                                    environment_spec spec);

} // namespace nimbus
