#pragma once

/// A QUEUE PARTITION actor: the durable queue of asynchronous events for the
/// functions hashed to it (ARCHITECTURE.md §1, RELIABILITY.md Q-1..Q-6).
///
/// Every change is a record in the partition's durable log (storage::
/// durable_log), and is acknowledged only once the record is on disk:
///
///   ENQUEUE  the event (the caller gets 202 only after this is durable)
///   LEASE    a poller took the event (durable before the poller runs it, so
///            that after a crash a second run is known and counted)
///   RETRY    the event waits until a time, with its retry counters
///   DONE     the event is finished (its destination record, if any, was
///            made durable before)
///
/// Recovery replays the log: ENQUEUEs without a DONE are pending again; a
/// LEASE without a later RETRY or DONE marks the next delivery as a possible
/// duplicate (counted, never silent). Leases expire after the function's
/// timeout plus a margin, and the event becomes visible again; a
/// completion carrying an old lease token is rejected and counted. The log
/// is trimmed below the oldest pending event.

#include "nimbus/actors/interfaces.hpp"
#include "nimbus/storage/durable_log.hpp"

#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace nimbus {

/// Settings of a queue partition.
struct queue_config {
  /// Directory of its durable log.
  std::string dir;
  uint64_t segment_bytes = 64ull << 20;
  /// A lease lasts the function's timeout plus this.
  std::chrono::milliseconds visibility_margin{30'000};
  /// Housekeeping interval (lease expiry, delayed events, trimming).
  std::chrono::milliseconds tick{1'000};
  /// Unix time in ms (tests substitute a clock).
  std::function<int64_t()> now_ms;
  /// File operations of the log (real files when null).
  std::shared_ptr<storage::log_fs> fs;
};

/// State of a QUEUE PARTITION.
struct queue_state {
  static constexpr const char* name = "queue";
  struct entry {
    queued_event event;
    /// Unix ms before which it is not delivered (retry delays).
    int64_t visible_at_ms = 0;
    /// Unix ms when the current lease expires (leased when event.lease != 0).
    int64_t lease_until_ms = 0;
    /// A lease was recorded without an outcome after it.
    bool delivered_without_outcome = false;
  };
  /// A poller waiting for events.
  struct waiter {
    uint32_t max = 1;
    caf::typed_response_promise<std::vector<queued_event>> promise;
  };
  /// An append whose durability the actor waits for.
  struct pending {
    queued_event event;
    caf::typed_response_promise<std::string> enqueued;
    std::vector<queued_event> leased;
    caf::typed_response_promise<std::vector<queued_event>> lease_promise;
  };
  queue_config config;
  std::shared_ptr<storage::durable_log> log;
  std::map<uint64_t, entry> events;
  std::deque<waiter> waiters;
  std::map<uint64_t, pending> in_flight;
  uint64_t next_token = 1;
  uint64_t next_lease = 1;
  queue_stats counters;
  /// The log failed: nothing more is accepted (fail-stop, Q-2).
  std::string failure;
};

/// Opens (and recovers) the partition's log and spawns the actor. Returns
/// nothing with `error` when the log cannot be opened or is corrupt.
std::optional<queue_actor> spawn_queue(caf::actor_system& sys, queue_config cfg,
                                       std::string& error);

} // namespace nimbus
