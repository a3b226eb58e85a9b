#pragma once

/// The stored definition of a function ($LATEST) and its persisted form.
///
/// On disk a record is one JSON object (format_version 1) holding exactly the
/// fields below; the code itself is stored apart, named by code_sha256_hex.
/// Fields added after the first records were written (reserved_concurrency,
/// event_invoke, dead_letter_target, and the container-image fields) may be
/// absent: absent means none (a record without image fields is a Zip function).

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

/// ImageConfig of a container-image function: overrides of the image's own
/// ENTRYPOINT, CMD and WORKDIR. Each part has a `set` flag, because AWS reports
/// (and applies) only the parts that were given; an empty list that was given
/// is not the same as no list.
struct image_config {
  std::vector<std::string> entry_point;
  bool entry_point_set = false;
  std::vector<std::string> command;
  bool command_set = false;
  std::string working_directory;
  bool working_directory_set = false;

  /// True if any part was given.
  bool any_set() const { return entry_point_set || command_set || working_directory_set; }
};

bool operator==(const image_config& a, const image_config& b);

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
  /// "Zip" or "Image".
  std::string package_type = "Zip";
  /// Image functions: Code.ImageUri as the caller gave it.
  std::string image_uri;
  /// Image functions: the image pinned at create/update time,
  /// "repository@sha256:<64 hex>".
  std::string resolved_image_uri;
  /// Image functions: the caller's ImageConfig overrides.
  storage::image_config image_config;
  /// Image functions, for the worker (resolved by the registry from the
  /// pushed image; empty until then): the name of the flattened image in the
  /// code store,
  std::string code_image;
  /// the command line to run (image ENTRYPOINT + CMD after ImageConfig),
  std::vector<std::string> image_argv;
  /// the working directory, and
  std::string image_workdir;
  /// the image's environment as "KEY=VALUE" entries, in image order (the
  /// function's own Environment takes precedence).
  std::vector<std::string> image_env;
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
