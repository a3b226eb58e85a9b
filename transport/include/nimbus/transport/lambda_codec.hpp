#pragma once

/// The Lambda REST API codec: JSON request bodies into validated values, and
/// values into the JSON responses and errors AWS clients expect (field names,
/// status codes and x-amzn-ErrorType exactly as in the AWS service model).

#include "nimbus/storage/function_record.hpp"
#include "nimbus/transport/http_types.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nimbus::transport::lambda {

/// An error answer: HTTP status, AWS error name, message.
struct api_error {
  int status = 500;
  std::string type = "ServiceException";
  std::string message;
};

/// Limits the codec enforces while parsing.
struct codec_limits {
  uint64_t code_size_zipped = 50 * 1024 * 1024;
  uint32_t environment_bytes = 4 * 1024;
};

/// A validated CreateFunction request.
struct function_spec {
  std::string name;
  std::string runtime;
  std::string role;
  std::string handler;
  std::string description;
  int32_t timeout = 3;
  int32_t memory_size = 128;
  int32_t ephemeral_storage = 512;
  std::map<std::string, std::string> environment;
  bool has_environment = false;
  std::vector<std::string> architectures{"x86_64"};
  std::string package_type = "Zip";
  /// DeadLetterConfig.TargetArn (a queue ARN); empty = none.
  std::string dead_letter_target;
  /// The decoded zip.
  std::string zip;
};

/// A validated UpdateFunctionConfiguration request: only present fields change.
struct configuration_patch {
  std::optional<std::string> runtime;
  std::optional<std::string> role;
  std::optional<std::string> handler;
  std::optional<std::string> description;
  std::optional<int32_t> timeout;
  std::optional<int32_t> memory_size;
  std::optional<int32_t> ephemeral_storage;
  std::optional<std::map<std::string, std::string>> environment;
  /// DeadLetterConfig.TargetArn; an empty string removes the dead-letter queue.
  std::optional<std::string> dead_letter_target;
  std::optional<std::string> revision_id;
};

/// A validated Put/UpdateFunctionEventInvokeConfig request.
struct event_invoke_update {
  /// Put (true) replaces the whole config, so absent settings are removed;
  /// Update (false) changes only the settings present.
  bool replace = true;
  std::optional<int32_t> maximum_retry_attempts;
  std::optional<int32_t> maximum_event_age_seconds;
  /// Present when DestinationConfig has OnSuccess / OnFailure; an empty
  /// string (no Destination) removes that destination.
  std::optional<std::string> on_success;
  std::optional<std::string> on_failure;
};

/// Where Nimbus delivers asynchronous invocation records (destinations) and
/// dead letters, parsed from an ARN:
///   arn:aws:lambda:<region>:<account>:function:<name>[:$LATEST]
///   arn:aws:sqs:<region>:<account>:<queue-name>  (a Nimbus queue; the name is
///   1-80 characters of [A-Za-z0-9_-])
struct delivery_target {
  enum class kind : uint8_t { function, queue };
  kind type = kind::queue;
  std::string region;
  std::string account_id;
  /// The function or queue name.
  std::string name;
};

/// A validated UpdateFunctionCode request.
struct code_update {
  /// The decoded zip.
  std::string zip;
  std::optional<std::string> revision_id;
  bool dry_run = false;
};

/// Either a parsed value or an error.
template <class T>
struct parsed {
  std::optional<T> value;
  api_error error;
};

/// Parses and validates a CreateFunction body.
parsed<function_spec> parse_create_function(std::string_view body, const codec_limits& limits);

/// Parses and validates an UpdateFunctionConfiguration body.
parsed<configuration_patch> parse_update_configuration(std::string_view body,
                                                       const codec_limits& limits);

/// Parses and validates an UpdateFunctionCode body.
parsed<code_update> parse_update_code(std::string_view body, const codec_limits& limits);

/// Parses and validates a PutFunctionEventInvokeConfig (`replace`) or
/// UpdateFunctionEventInvokeConfig body. Destinations must have one of the
/// delivery_target forms; whether they belong to the caller is the
/// registry's check.
parsed<event_invoke_update> parse_event_invoke_config(std::string_view body, bool replace);

/// Parses an ARN in one of the forms Nimbus delivers to; nothing otherwise.
std::optional<delivery_target> parse_delivery_target(std::string_view arn);

/// Renders a FunctionEventInvokeConfig for the qualified function ARN.
std::string event_invoke_config_json(std::string_view function_arn,
                                     const storage::event_invoke_config& config);

/// Renders a ListFunctionEventInvokeConfigs page of (qualified function ARN,
/// config) pairs.
std::string list_event_invoke_configs_json(
  const std::vector<std::pair<std::string, storage::event_invoke_config>>& page,
  std::string_view next_marker);

/// Renders a FunctionConfiguration object.
std::string configuration_json(const storage::function_record& r, std::string_view region);

/// Renders a GetFunction response: Configuration plus Code.
std::string get_function_json(const storage::function_record& r, std::string_view region,
                              std::string_view code_location);

/// Renders a ListFunctions page.
std::string list_functions_json(const std::vector<storage::function_record>& page,
                                std::string_view region, std::string_view next_marker);

/// Account figures for GetAccountSettings.
struct account_settings {
  uint64_t total_code_size_limit = 0;
  uint64_t code_size_unzipped_limit = 0;
  uint64_t code_size_zipped_limit = 0;
  uint32_t concurrent_executions = 0;
  uint32_t unreserved_concurrent_executions = 0;
  uint64_t total_code_size = 0;
  uint64_t function_count = 0;
};

/// Renders a GetAccountSettings response.
std::string account_settings_json(const account_settings& s);

/// A JSON response with the given status.
http_response json_response(int status, std::string body);

/// The error response AWS clients parse: the status, x-amzn-ErrorType and a
/// body {"Type": "User"|"Service", "Message": ..., "message": ...}.
http_response error_response(const api_error& error);

/// Validation message in AWS's wording: "1 validation error detected: Value
/// '<value>' at '<field>' failed to satisfy constraint: <constraint>".
api_error invalid_parameter(std::string_view field, std::string_view value,
                            std::string_view constraint);

} // namespace nimbus::transport::lambda
