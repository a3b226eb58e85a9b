#pragma once

/// The stored definition of a function ($LATEST) and its persisted form.
///
/// On disk a record is one JSON object (format_version 1) holding exactly the
/// fields below; the code itself is stored apart, named by code_sha256_hex.
/// Fields added after the first records were written (reserved_concurrency,
/// event_invoke, dead_letter_target) may be absent: absent means none.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::storage {

/// How a function's asynchronous invocations are handled
/// (Put/UpdateFunctionEventInvokeConfig). AWS reports only the settings that
/// were given, so "not set" (-1, empty) is kept apart from the defaults that
/// apply: retries `maximum_retry_attempts < 0 ? 2 : value`, age
/// `maximum_event_age_seconds < 0 ? 21600 : value`.
struct event_invoke_config {
  /// Retries after a function error, 0-2; -1 = not set (AWS default 2 applies).
  int32_t maximum_retry_attempts = 2;
  /// Oldest event still run, 60-21600 s; -1 = not set (default 21600 applies).
  int32_t maximum_event_age_seconds = 21600;
  /// Destination ARN for successful invocations; empty = none.
  std::string on_success;
  /// Destination ARN for failed invocations; empty = none.
  std::string on_failure;
  /// Unix time of the last Put/Update in milliseconds.
  int64_t last_modified_ms = 0;
};

/// One function's configuration and code reference.
struct function_record {
  /// Owning account (12 digits).
  std::string account_id;
  /// Function name ([a-zA-Z0-9-_]{1,64}).
  std::string name;
  std::string runtime;
  std::string role;
  std::string handler;
  std::string description;
  /// Seconds, 1-900.
  int32_t timeout = 3;
  /// MB, 128-10240.
  int32_t memory_size = 128;
  /// /tmp size in MB, 512-10240.
  int32_t ephemeral_storage = 512;
  /// Environment variables; `has_environment` tells whether the function
  /// was given an Environment at all (AWS omits the field otherwise).
  std::map<std::string, std::string> environment;
  bool has_environment = false;
  std::vector<std::string> architectures{"x86_64"};
  std::string package_type = "Zip";
  /// Base64 SHA-256 of the zip, as AWS reports CodeSha256.
  std::string code_sha256;
  /// Hex SHA-256 of the zip: the key of the stored code.
  std::string code_sha256_hex;
  /// Size of the zip in bytes.
  int64_t code_size = 0;
  /// ISO-8601 time of the last change, "2019-11-21T19:32:12.000+0000".
  std::string last_modified;
  /// Changes on every update; used for optimistic concurrency.
  std::string revision_id;
  std::string version = "$LATEST";
  std::string state = "Active";
  std::string last_update_status = "Successful";
  /// Reserved concurrency (PutFunctionConcurrency); -1 when none is set.
  int32_t reserved_concurrency = -1;
  /// Asynchronous invocation options of $LATEST; none until a Put. Changing
  /// them keeps `revision_id` (as on AWS), so warm environments stay.
  std::optional<event_invoke_config> event_invoke;
  /// DeadLetterConfig.TargetArn (a queue ARN); empty = none.
  std::string dead_letter_target;
};

/// Serializes a record for storage.
std::string to_json(const function_record& r);

/// Parses a stored record; returns nothing (and sets `error`) if malformed.
std::optional<function_record> function_record_from_json(std::string_view json,
                                                         std::string& error);

/// Formats a Unix time in milliseconds the way Lambda reports LastModified.
std::string format_last_modified(int64_t unix_ms);

} // namespace nimbus::storage
