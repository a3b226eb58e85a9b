#pragma once

/// Message types exchanged between actors, and `inspect` overloads that make
/// the plain structs of transport/ and storage/ serializable for CAF (those
/// folders know nothing of CAF; the overloads live here, in the namespaces of
/// the types so that argument-dependent lookup finds them).

#include "nimbus/storage/function_record.hpp"
#include "nimbus/transport/http_types.hpp"
#include "nimbus/transport/lambda_codec.hpp"

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/none.hpp>
#include <caf/optional.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace caf {

/// CAF 0.17 cannot inspect std::optional; this bridges through caf::optional.
template <class Inspector, class T>
typename Inspector::result_type inspect(Inspector& f, std::optional<T>& x) {
  caf::optional<T> tmp;
  if (x)
    tmp = *x;
  auto load = meta::load_callback([&]() -> error {
    if (tmp)
      x = *tmp;
    else
      x.reset();
    return none;
  });
  return f(tmp, load);
}

} // namespace caf

namespace nimbus {

/// One page of ListFunctions.
struct function_page {
  std::vector<storage::function_record> functions;
  /// Marker for the next page; empty on the last page.
  std::string next_marker;
};

/// What an account uses (GetAccountSettings).
struct account_usage {
  uint64_t total_code_size = 0;
  uint64_t function_count = 0;
};

/// What a worker needs to create an execution environment.
struct environment_spec {
  std::string environment_id;
  std::string account_id;
  std::string function_name;
  std::string version = "$LATEST";
  /// Qualified ARN the runtime sees as invoked-function-arn.
  std::string function_arn;
  std::string runtime;
  std::string handler;
  /// Host directory holding the unpacked code (mounted at /var/task).
  std::string code_dir;
  int32_t memory_mb = 128;
  int32_t timeout_s = 3;
  int32_t ephemeral_mb = 512;
  std::map<std::string, std::string> variables;
  std::string region = "us-east-1";
  /// Hex SHA-256 of the code; the worker unpacks it into its code cache when
  /// code_dir is empty.
  std::string code_sha256_hex;
  /// The zip itself, filled in by the worker when its cache misses.
  std::string code_zip;
  /// "Zip" or "Image".
  std::string package_type = "Zip";
  /// The function's image in the code store ("zip-<hex>", "oci-<hex>"); when
  /// set, the worker mounts it (lazily) instead of unpacking code_zip.
  std::string code_image;
  /// Image functions: the command (ENTRYPOINT + CMD, or ImageConfig), the
  /// working directory and the image's ENV ("KEY=VALUE").
  std::vector<std::string> image_argv;
  std::string image_workdir;
  std::vector<std::string> image_env;
  /// The io shard (transport::io_runner) of the request that asked for this
  /// environment, or -1: a hint where the environment's Runtime API is
  /// served (and, for a small function, which CPU it runs on).
  int32_t shard = -1;
};

/// An environment that finished INIT.
struct environment_ready {
  std::string environment_id;
  /// Time to assemble the sandbox, in microseconds.
  int64_t sandbox_us = 0;
  /// Time from starting the runtime to its first /next, in microseconds.
  int64_t init_us = 0;
  /// The ENVIRONMENT actor itself (set by the worker): invocations go to it
  /// directly, not through the worker (ARCHITECTURE.md §1, step 5).
  caf::actor environment;
  /// The io shard serving its Runtime API (-1: unknown).
  int32_t shard = -1;
};

/// One invocation handed to an environment.
struct invocation_request {
  std::string request_id;
  std::string payload;
  /// Client context JSON (already base64-decoded), empty if none.
  std::string client_context;
  std::string trace_id;
};

/// How an invocation ended.
struct invocation_result {
  std::string request_id;
  /// "success", "function_error", "timeout", "runtime_exit", "out_of_memory".
  std::string outcome;
  /// Error type for everything but success (e.g. "Runtime.ExitError").
  std::string error_type;
  /// The response body, or the error object as JSON.
  std::string payload;
  /// The invocation's log: runtime output framed by START, END and REPORT.
  std::string log;
  int64_t duration_us = 0;
  /// Init duration on the first invocation of an environment, else 0.
  int64_t init_duration_us = 0;
  uint64_t max_memory_bytes = 0;
  /// True if the environment is gone after this invocation (timeout, crash).
  bool environment_lost = false;
};

/// What a worker can still take.
struct worker_capacity {
  uint64_t memory_total_mb = 0;
  uint64_t memory_used_mb = 0;
  uint32_t environments = 0;
};

/// A function invocation handed to ASSIGNMENT.
struct invoke_order {
  /// The function's record, shared with the frontend's metadata cache: it is
  /// not copied per invocation (on the wire it travels by value).
  std::shared_ptr<const storage::function_record> function;
  invocation_request request;
  /// The io shard the request arrived on, or -1: ASSIGNMENT prefers an idle
  /// environment served by the same shard (see transport::io_runner).
  int32_t shard = -1;
};

/// How ASSIGNMENT served an invocation.
struct invoke_outcome {
  invocation_result result;
  /// True if a new environment was created for it.
  bool cold = false;
  std::string environment_id;
  /// Phase timings in microseconds (0 when the phase did not happen).
  int64_t placement_us = 0;
  int64_t sandbox_us = 0;
  int64_t init_us = 0;
};

/// Concurrency figures of one account.
struct counter_stats {
  uint32_t in_flight = 0;
  uint32_t account_limit = 0;
  uint32_t unreserved_limit = 0;
  uint64_t throttles = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, invoke_order& x) {
  storage::function_record record;
  if (x.function)
    record = *x.function; // saving (loading starts without a record)
  auto load = caf::meta::load_callback([&]() -> caf::error {
    x.function = std::make_shared<const storage::function_record>(std::move(record));
    return caf::none;
  });
  return f(caf::meta::type_name("invoke_order"), record, x.request, x.shard, load);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, invoke_outcome& x) {
  return f(caf::meta::type_name("invoke_outcome"), x.result, x.cold, x.environment_id,
           x.placement_us, x.sandbox_us, x.init_us);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, counter_stats& x) {
  return f(caf::meta::type_name("counter_stats"), x.in_flight, x.account_limit,
           x.unreserved_limit, x.throttles);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, environment_spec& x) {
  return f(caf::meta::type_name("environment_spec"), x.environment_id, x.account_id,
           x.function_name, x.version, x.function_arn, x.runtime, x.handler, x.code_dir,
           x.memory_mb, x.timeout_s, x.ephemeral_mb, x.variables, x.region, x.code_sha256_hex,
           x.code_zip, x.package_type, x.code_image, x.image_argv, x.image_workdir,
           x.image_env, x.shard);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, environment_ready& x) {
  return f(caf::meta::type_name("environment_ready"), x.environment_id, x.sandbox_us, x.init_us,
           x.environment, x.shard);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, invocation_request& x) {
  return f(caf::meta::type_name("invocation_request"), x.request_id, x.payload, x.client_context,
           x.trace_id);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, invocation_result& x) {
  return f(caf::meta::type_name("invocation_result"), x.request_id, x.outcome, x.error_type,
           x.payload, x.log, x.duration_us, x.init_duration_us, x.max_memory_bytes,
           x.environment_lost);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, worker_capacity& x) {
  return f(caf::meta::type_name("worker_capacity"), x.memory_total_mb, x.memory_used_mb,
           x.environments);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, function_page& x) {
  return f(caf::meta::type_name("function_page"), x.functions, x.next_marker);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, account_usage& x) {
  return f(caf::meta::type_name("account_usage"), x.total_code_size, x.function_count);
}

/// One asynchronous invocation waiting in a queue partition.
struct queued_event {
  /// Sequence number of its ENQUEUE record: its id within the partition.
  uint64_t seq = 0;
  /// The RequestId the caller got with the 202 (the function sees it too).
  std::string request_id;
  std::string account_id;
  std::string function_name;
  /// The event (JSON).
  std::string payload;
  /// Unix ms when the event was accepted (its age counts from here).
  int64_t enqueued_ms = 0;
  /// The function's timeout when the event was accepted (lease length).
  int32_t timeout_s = 3;
  /// Invocations started so far.
  uint32_t attempts = 0;
  /// Retries used after function errors, and after throttles/system errors.
  uint32_t function_errors = 0;
  uint32_t system_retries = 0;
  /// Token of the current lease (0: not leased).
  uint64_t lease = 0;
  /// Delivered before without a recorded outcome (a crash or an expired
  /// lease): this delivery may run the function a second time.
  bool redelivery = false;
  /// Message attributes (Nimbus message queues: the DLQ's RequestID,
  /// ErrorCode and ErrorMessage).
  std::map<std::string, std::string> attributes;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, queued_event& x) {
  return f(caf::meta::type_name("queued_event"), x.seq, x.request_id, x.account_id,
           x.function_name, x.payload, x.enqueued_ms, x.timeout_s, x.attempts, x.function_errors,
           x.system_retries, x.lease, x.redelivery, x.attributes);
}

/// Counters of a queue partition.
struct queue_stats {
  /// Events waiting or in flight.
  uint64_t depth = 0;
  /// Of those, leased by a poller right now.
  uint64_t leased = 0;
  /// Age of the oldest event in ms (0 when empty).
  int64_t oldest_age_ms = 0;
  /// Pollers waiting for an event.
  uint64_t waiting_pollers = 0;
  uint64_t accepted = 0;
  uint64_t attempts = 0;
  uint64_t retries = 0;
  /// Deliveries that may repeat an earlier one (after a crash or an expired
  /// lease), and completions that arrived for a lease no longer current.
  uint64_t duplicates = 0;
  uint64_t stale_completions = 0;
  /// Finished events by condition (Success, RetriesExhausted, ...).
  std::map<std::string, uint64_t> outcomes;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, queue_stats& x) {
  return f(caf::meta::type_name("queue_stats"), x.depth, x.leased, x.oldest_age_ms,
           x.waiting_pollers, x.accepted, x.attempts, x.retries, x.duplicates,
           x.stale_completions, x.outcomes);
}

/// An HTTP request handed to the FRONTEND together with the function that
/// answers it (the HTTP server's respond function). This saves the bridge
/// actor and the reply message per request; it never leaves the process, so
/// it is an unsafe (not serializable) message type.
struct http_exchange {
  transport::http_request request;
  std::shared_ptr<std::function<void(transport::http_response)>> respond;
};

} // namespace nimbus

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(nimbus::http_exchange)

namespace nimbus::transport {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, http_request& x) {
  return f(caf::meta::type_name("http_request"), x.method, x.target, x.headers, x.body,
           x.request_id, x.remote, x.body_file, x.body_sha256_hex, x.body_file_size, x.shard);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, http_response& x) {
  return f(caf::meta::type_name("http_response"), x.status, x.headers, x.body);
}

} // namespace nimbus::transport

namespace nimbus::transport::lambda {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, function_spec& x) {
  return f(caf::meta::type_name("function_spec"), x.name, x.runtime, x.role, x.handler,
           x.description, x.timeout, x.memory_size, x.ephemeral_storage, x.environment,
           x.has_environment, x.architectures, x.package_type, x.dead_letter_target, x.zip,
           x.image_uri, x.image_config);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, configuration_patch& x) {
  return f(caf::meta::type_name("configuration_patch"), x.runtime, x.role, x.handler,
           x.description, x.timeout, x.memory_size, x.ephemeral_storage, x.environment,
           x.dead_letter_target, x.revision_id, x.image_config);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event_invoke_update& x) {
  return f(caf::meta::type_name("event_invoke_update"), x.replace, x.maximum_retry_attempts,
           x.maximum_event_age_seconds, x.on_success, x.on_failure);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, code_update& x) {
  return f(caf::meta::type_name("code_update"), x.zip, x.revision_id, x.dry_run, x.image_uri);
}

} // namespace nimbus::transport::lambda

namespace nimbus::storage {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event_invoke_config& x) {
  return f(caf::meta::type_name("event_invoke_config"), x.maximum_retry_attempts,
           x.maximum_event_age_seconds, x.on_success, x.on_failure, x.last_modified_ms);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, image_config& x) {
  return f(caf::meta::type_name("image_config"), x.entry_point, x.entry_point_set, x.command,
           x.command_set, x.working_directory, x.working_directory_set);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, function_record& x) {
  return f(caf::meta::type_name("function_record"), x.account_id, x.name, x.runtime, x.role,
           x.handler, x.description, x.timeout, x.memory_size, x.ephemeral_storage,
           x.environment, x.has_environment, x.architectures, x.package_type, x.code_sha256,
           x.code_sha256_hex, x.code_size, x.last_modified, x.revision_id, x.version, x.state,
           x.last_update_status, x.reserved_concurrency, x.event_invoke, x.dead_letter_target,
           x.image_uri, x.resolved_image_uri, x.image_config, x.code_image, x.image_argv,
           x.image_workdir, x.image_env);
}

} // namespace nimbus::storage
