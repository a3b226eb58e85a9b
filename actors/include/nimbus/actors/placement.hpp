#pragma once

/// The PLACEMENT actor: chooses the worker for each new environment.
///
/// Scoring policy (choose_worker): among workers with enough free memory, with
/// u the worker's memory utilization after placing the environment (0..1),
///   score = packing * u - (1 - packing) * u^2.
/// The first term rewards packing density (filling workers, so that others
/// stay empty for large environments and can be drained); the second
/// penalizes high utilization more and more steeply (headroom for bursts).
/// The score peaks at u* = packing / (2 (1 - packing)): packing 0 spreads
/// onto the emptiest worker, 1 fills the fullest that fits, 0.5 fills each
/// worker to about half before preferring emptier ones. Ties go to the worker
/// with fewer environments, then to the earlier registered one. The
/// reason for each decision is logged at debug level.

#include "nimbus/actors/interfaces.hpp"

#include <caf/fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace nimbus {

/// What placement knows of one worker.
struct worker_load {
  uint64_t memory_total_mb = 0;
  uint64_t memory_used_mb = 0;
  uint32_t environments = 0;
};

/// A placement decision.
struct placement_choice {
  size_t index = 0;
  double score = 0;
  /// Human-readable reason (for the debug log).
  std::string reason;
};

/// Applies the scoring policy; nothing if no worker has room.
std::optional<placement_choice> choose_worker(const std::vector<worker_load>& workers,
                                              uint64_t memory_mb, double packing);

/// Settings of placement.
struct placement_config {
  /// See the file comment; 0.5 fills workers to about half, then spreads.
  double packing = 0.5;
};

/// State of the PLACEMENT actor.
struct placement_state {
  static constexpr const char* name = "placement";
  placement_config config;
  std::vector<worker_actor> workers;
};

/// The PLACEMENT behavior.
placement_actor::behavior_type placement(placement_actor::stateful_pointer<placement_state> self,
                                         placement_config cfg);

/// Spawns PLACEMENT.
placement_actor spawn_placement(caf::actor_system& sys, placement_config cfg);

} // namespace nimbus
