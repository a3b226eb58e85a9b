#pragma once

/// A POLLER actor: takes events from one queue partition, one at a time, and
/// runs each through the synchronous invoke path (COUNTER lease, ASSIGNMENT
/// invoke), then finishes it (ack, destination) or schedules a retry
/// (LAMBDA-API.md B.8):
///
/// - function errors: up to MaximumRetryAttempts (0-2, default 2) more
///   attempts, the first after retry_delay_first, the next after
///   retry_delay_second; then the failure outcome (RetriesExhausted);
/// - throttles and system errors: backoff doubling from backoff_initial to
///   backoff_max, for as long as the event is younger than
///   MaximumEventAgeInSeconds (default 6 h); an older event is not run and
///   ends as EventAgeExceeded;
/// - reserved concurrency 0: the failure outcome at once, no retries.
///
/// An outcome goes to the configured destination as the invocation record of
/// B.8 (OnSuccess / OnFailure; a function destination gets it as an async
/// event) and the event is marked done only after that record is durable.

#include "nimbus/actors/interfaces.hpp"
#include "nimbus/config/config.hpp"
#include "nimbus/storage/function_logs.hpp"

#include <caf/fwd.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace nimbus {

/// Settings of a poller.
struct poller_config {
  std::string region = "us-east-1";
  /// Timings of retries and backoff.
  config::async_config async;
  /// Unix time in ms (tests substitute a clock).
  std::function<int64_t()> now_ms;
  queue_actor queue;
  /// Routes destination records to their function's partition.
  queue_manager_actor manager;
  registry_actor registry;
  counter_actor counter;
  assignment_actor assignment;
  /// Where the functions' logs go (may be null).
  std::shared_ptr<storage::function_log_store> logs;
};

/// How an event is retried and where its outcome goes, from the function's
/// event invoke config and dead-letter config.
struct async_settings {
  int32_t maximum_retry_attempts = 2;
  int64_t maximum_event_age_seconds = 21600;
  std::string on_success;
  std::string on_failure;
  std::string dead_letter;
};

/// The settings of a function (AWS defaults where it configured none).
async_settings async_settings_of(const storage::function_record& r);

/// The invocation record of LAMBDA-API.md B.8 ("version":"1.0").
/// `response_payload` is JSON (or empty when the function never ran).
std::string invocation_record(const queued_event& ev, const std::string& function_arn,
                              const std::string& condition, int64_t now_ms, bool invoked,
                              bool function_error, const std::string& response_payload);

/// State of a POLLER.
struct poller_state {
  static constexpr const char* name = "poller";
  poller_config config;
  bool retiring = false;
  bool busy = false;
};

/// Spawns a POLLER; it starts polling at once.
poller_actor spawn_poller(caf::actor_system& sys, poller_config cfg);

} // namespace nimbus
