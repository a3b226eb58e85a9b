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

/// A container image named by a function's Code.ImageUri.
struct image_ref {
  /// Repository name, e.g. "team/web" (see valid_repository_name).
  std::string repository;
  /// The tag; empty when the image is named by digest.
  std::string tag;
  /// "sha256:<64 lowercase hex>"; empty when the image is named by tag.
  std::string digest;

  /// "repository:tag" or "repository@sha256:...".
  std::string reference() const;
};

/// Parses an ImageUri: "repo:tag", "repo@sha256:<64 hex>", or either behind
/// this node's registry host "<account>.dkr.ecr.<region>.amazonaws.com/".
/// A registry host must name `account` and `region` (an empty `account` or
/// `region` accepts any: a syntax check, as the codec does before it knows
/// the caller). Returns nothing on success, else an
/// InvalidParameterValueException in AWS's wording.
std::optional<api_error> parse_image_uri(std::string_view uri, std::string_view account,
                                         std::string_view region, image_ref& out);

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
  /// "Zip" or "Image".
  std::string package_type = "Zip";
  /// DeadLetterConfig.TargetArn (a queue ARN); empty = none.
  std::string dead_letter_target;
  /// The decoded zip (Zip functions).
  std::string zip;
  /// Code.ImageUri as given (Image functions; syntax checked, see
  /// parse_image_uri; the registry checks account and region).
  std::string image_uri;
  /// ImageConfig (Image functions).
  storage::image_config image_config;
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
  /// ImageConfig: replaces the whole ImageConfig (parts not given are unset).
  /// Only for Image functions (see check_configuration_patch).
  std::optional<storage::image_config> image_config;
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

/// A validated UpdateFunctionCode request: exactly one of `zip` and
/// `image_uri` is set.
struct code_update {
  /// The decoded zip (empty for an image update).
  std::string zip;
  std::optional<std::string> revision_id;
  bool dry_run = false;
  /// ImageUri (empty for a zip update; syntax checked). Last, so that
  /// aggregate initializations written before it still mean the same.
  std::string image_uri;
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

/// Checks an UpdateFunctionCode request against the function's package type:
/// a Zip function takes ZipFile, an Image function ImageUri. Returns nothing
/// when they fit, else an InvalidParameterValueException.
std::optional<api_error> check_code_update(const storage::function_record& function,
                                           const code_update& update);

/// Checks an UpdateFunctionConfiguration request against the function's
/// package type: ImageConfig only for Image functions; Runtime and Handler
/// only for Zip functions.
std::optional<api_error> check_configuration_patch(const storage::function_record& function,
                                                   const configuration_patch& patch);

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
