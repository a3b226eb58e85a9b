#pragma once

/// An ASSIGNMENT partition actor: the execution environments of the function
/// versions hashed to it (one partition on a single node; the shape is kept
/// for the replicated multi-node partitions of ARCHITECTURE.md §3).
///
/// Environments are keyed by account, function and revision: an environment
/// never serves another function, account or revision (LAM-9), so after
/// UpdateFunctionCode or UpdateFunctionConfiguration the old environments
/// retire (at once when idle, after their invocation when busy). An invoke
/// takes the most recently used idle environment of its key (warm), or asks
/// the COUNTER for a scale token, PLACEMENT for a worker and that WORKER for a
/// new environment (cold). Among the most recently used idle environments it
/// prefers one on the io shard the request arrived on (invoke_order::shard).
/// States: initializing, idle, busy, retiring.
/// Idle environments retire after `keep_alive`, all after `max_lifetime`.

#include "nimbus/actors/interfaces.hpp"

#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace nimbus {

/// Settings of an assignment partition.
struct assignment_config {
  std::string region = "us-east-1";
  /// Idle environments retire after this long.
  std::chrono::milliseconds keep_alive{10 * 60 * 1000};
  /// Every environment retires after this long.
  std::chrono::milliseconds max_lifetime{2 * 60 * 60 * 1000};
  /// How often expiry is checked.
  std::chrono::milliseconds sweep_interval{1000};
  counter_actor counter;
  placement_actor placement;
  registry_actor registry;
};

/// Checks an assignment config; returns an error text or nothing.
std::string validate(const assignment_config& cfg);

/// State of an ASSIGNMENT partition.
struct assignment_state {
  static constexpr const char* name = "assignment";
  enum class phase { initializing, idle, busy, retiring };
  struct environment {
    std::string id;
    std::string key;
    std::string account;
    std::string function;
    worker_actor worker;
    /// The environment actor, which serves invocations directly (monitored:
    /// if it dies, its invocation fails instead of waiting for ever). Empty
    /// when the worker did not name it: invocations then go through the worker.
    environment_actor handle;
    /// The invocation it serves, answered by the down handler if it dies.
    caf::typed_response_promise<invoke_outcome> pending;
    phase state = phase::initializing;
    /// The io shard serving its Runtime API (-1: unknown).
    int32_t shard = -1;
    std::chrono::steady_clock::time_point created;
    std::chrono::steady_clock::time_point last_used;
  };
  assignment_config config;
  /// Hashed: looked up several times per invocation, by ids that share
  /// their first characters.
  std::unordered_map<std::string, environment> environments;
  /// key -> idle environment ids, most recently used last.
  std::unordered_map<std::string, std::vector<std::string>> idle;
  /// (account, function) -> the key of the revision last invoked or
  /// announced: environments of any other key have been retired.
  std::map<std::pair<std::string, std::string>, std::string> revisions;
  uint64_t cold_starts = 0;
  uint64_t warm_starts = 0;
};

/// The ASSIGNMENT behavior.
assignment_actor::behavior_type
assignment(assignment_actor::stateful_pointer<assignment_state> self, assignment_config cfg);

/// Spawns an ASSIGNMENT partition (and subscribes it to registry changes).
assignment_actor spawn_assignment(caf::actor_system& sys, assignment_config cfg);

} // namespace nimbus
