#pragma once

/// The WORKER actor: owns the execution environments of one host. It creates
/// an ENVIRONMENT actor per environment (each detached, since sandboxes are
/// made with blocking system calls), runs INIT, forwards invocations, destroys
/// environments on request or when one is lost (timeout, crash, OOM), and
/// reports its capacity. Concurrent environments never share a uid. The
/// worker itself never blocks.

#include "nimbus/actors/environment.hpp"
#include "nimbus/actors/interfaces.hpp"

#include <caf/fwd.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <string>

namespace nimbus {

/// Settings of a worker.
struct worker_config {
  environment_host_config host;
  /// Memory the worker may hand to environments, in MB.
  uint64_t memory_total_mb = 4096;
  /// Each live environment runs as its own uid (and gid) from
  /// [first_uid, first_uid + uid_count): per-user kernel limits (inotify
  /// instances, pipe buffers, pending signals) are then never shared between
  /// tenants.
  uint32_t first_uid = 10001;
  uint32_t uid_count = 10000;
  /// Where code comes from when it is not in the cache (may be null when every
  /// spec names a code_dir).
  registry_actor registry;
};

/// Checks a worker config; returns an error text or nothing.
std::string validate(const worker_config& cfg);

/// State of the WORKER actor.
struct worker_state {
  static constexpr const char* name = "worker";
  struct entry {
    environment_actor handle;
    int32_t memory_mb = 0;
    int32_t timeout_s = 3;
    uint32_t uid = 0;
    /// The invocation in flight, answered with an error if the environment
    /// actor ends without answering it (requests to environments carry no
    /// timeout: the environment enforces the function timeout itself).
    caf::typed_response_promise<invocation_result> pending;
  };
  worker_config config;
  std::map<std::string, entry> environments;
  uint64_t memory_used_mb = 0;
  /// uids of live environments.
  std::set<uint32_t> uids_in_use;

  ~worker_state();
};

/// The WORKER behavior.
worker_actor::behavior_type worker(worker_actor::stateful_pointer<worker_state> self,
                                   worker_config cfg);

/// Spawns a WORKER.
worker_actor spawn_worker(caf::actor_system& sys, worker_config cfg);

} // namespace nimbus
