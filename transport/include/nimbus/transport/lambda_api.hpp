#pragma once

/// Routing of the Lambda REST API: which operation a method and path name,
/// with the path label decoded, and parsing of function names in all the
/// forms AWS accepts (name, name:qualifier, partial ARN, full ARN).

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nimbus::transport::lambda {

/// The operations Nimbus serves.
enum class operation {
  create_function,
  list_functions,
  get_function,
  get_function_configuration,
  delete_function,
  update_function_code,
  update_function_configuration,
  get_account_settings,
  invoke,
  put_function_concurrency,
  get_function_concurrency,
  delete_function_concurrency,
  put_function_event_invoke_config,
  update_function_event_invoke_config,
  get_function_event_invoke_config,
  delete_function_event_invoke_config,
  list_function_event_invoke_configs,
  /// GET /nimbus/logs/{FunctionName}?Tail=bytes: the function's stored log.
  get_function_logs,
  /// POST /nimbus/queues/{QueueName}/receive?MaxNumberOfMessages=N: messages
  /// of a Nimbus message queue (async destinations, dead-letter queues).
  receive_queue_messages,
  /// DELETE /nimbus/queues/{QueueName}/messages/{ReceiptHandle}.
  delete_queue_message,
  health,
  metrics,
  /// GET /nimbus/code/{account}/{name}/{sha256-hex}?Expires=&Signature=: the
  /// code download link that GetFunction returns as Code.Location.
  download_code,
  /// PUT /nimbus/images/{repository}:{tag}: upload a container image (a
  /// docker/OCI archive as the body); labels = {repository, tag}.
  push_image,
};

/// The AWS name of an operation, e.g. "CreateFunction" (used in metrics).
std::string_view operation_name(operation op);

/// A matched route.
struct route {
  operation op;
  /// The decoded {FunctionName} path label; empty when the path has none.
  std::string function_name;
  /// Further decoded path labels (download_code: account, name, hex digest;
  /// push_image: repository, tag).
  std::vector<std::string> labels;
  /// Decoded query parameters in order.
  std::vector<std::pair<std::string, std::string>> query;

  /// The first value of a query parameter.
  std::optional<std::string> param(std::string_view name) const;
};

/// An error to answer instead of routing.
struct route_error {
  int status;
  std::string type;
  std::string message;
};

/// The outcome of matching: a route or an error.
struct match_result {
  std::optional<route> matched;
  route_error error;
};

/// Matches a request's method and raw target (path plus query).
match_result match(std::string_view method, std::string_view target);

/// True for operations that need no SigV4 signature (health, metrics, and the
/// code download link, which carries its own signature).
bool is_public(operation op);

/// A function named in a request, as parsed from any accepted form.
struct function_ref {
  /// The bare function name.
  std::string name;
  /// Account id from an ARN (empty if none was given).
  std::string account_id;
  /// Region from a full ARN (empty if none was given).
  std::string region;
  /// Qualifier ("$LATEST", a version or an alias), if given.
  std::optional<std::string> qualifier;
};

/// Parses a FunctionName: "name", "name:qualifier",
/// "123456789012:function:name[:qualifier]" or
/// "arn:aws:lambda:region:123456789012:function:name[:qualifier]".
/// `max_length` is the operation's limit (140 for most control-plane calls).
std::optional<function_ref> parse_function_name(std::string_view text, size_t max_length);

/// True if `name` is a valid bare function name ([a-zA-Z0-9-_]{1,64}).
bool valid_function_name(std::string_view name);

/// True if `name` is a valid image repository name: lowercase [a-z0-9]+
/// groups joined by one of '.', '_', '-', and such components joined by '/',
/// at most 255 characters (the ECR rule).
bool valid_repository_name(std::string_view name);

/// True if `tag` is a valid image tag: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
bool valid_image_tag(std::string_view tag);

/// Builds "arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]".
std::string function_arn(std::string_view region, std::string_view account_id,
                         std::string_view name, std::string_view qualifier = {});

} // namespace nimbus::transport::lambda
