#pragma once

/// The node configuration: its schema, the TOML loader, and validation.
///
/// A config file is TOML. Every key is optional except where noted; a missing
/// key takes the default shown in config/single-node.toml, which is also
/// compiled into nimbusd and used when no --config is given. Unknown keys and
/// values of the wrong type or out of range are errors that name the key.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::config {

/// One tenant account with its (single) access key.
struct account {
  /// 12-digit AWS-style account id.
  std::string id;
  /// Access key id clients sign with.
  std::string access_key_id;
  /// Secret access key (never logged).
  std::string secret_access_key;
};

/// The HTTP API endpoint.
struct api_config {
  /// Address to listen on.
  std::string listen_address = "127.0.0.1";
  /// Port to listen on (0: choose a free one and log it).
  uint16_t listen_port = 9000;
  /// Number of HTTP io threads.
  uint32_t io_threads = 2;
  /// Limit for request line plus header fields.
  uint32_t max_header_bytes = 16 * 1024;
  /// Total time to receive a request's header block.
  std::chrono::milliseconds header_timeout{10'000};
  /// Total time to receive a request's body.
  std::chrono::milliseconds body_timeout{120'000};
  /// Idle keep-alive connection timeout.
  std::chrono::milliseconds idle_timeout{60'000};
  /// Pipelined requests read ahead per connection.
  uint32_t max_pipeline = 8;
  /// Allowed SigV4 clock skew.
  std::chrono::seconds clock_skew{300};
  /// Time an actor has to answer one API request.
  std::chrono::milliseconds request_timeout{30'000};
};

/// Account-level limits (AWS quotas).
struct limits_config {
  /// Concurrent executions per account.
  uint32_t concurrent_executions = 1000;
  /// Largest control-plane request body (a 50 MB zip in base64 plus JSON).
  uint64_t control_body_bytes = 70'167'211;
  /// Largest zip upload.
  uint64_t code_size_zipped = 50 * 1024 * 1024;
  /// Largest unzipped code.
  uint64_t code_size_unzipped = 250 * 1024 * 1024;
  /// Total code storage per account.
  uint64_t total_code_size = 75ull * 1024 * 1024 * 1024;
  /// Total size of a function's environment variables.
  uint32_t environment_bytes = 4 * 1024;
};

/// Log settings.
struct log_config {
  /// spdlog level name: trace, debug, info, warn, error, critical, off.
  std::string level = "info";
};

/// The whole node configuration.
struct node_config {
  /// Name of this node.
  std::string node_name = "nimbus-1";
  /// Directory for all durable state.
  std::string data_dir = ".nimbus-data";
  /// Region this node claims to be (ARNs, SigV4 scope).
  std::string region = "us-east-1";
  api_config api;
  limits_config limits;
  log_config log;
  std::vector<account> accounts;
};

/// A config error: the key it is about and what is wrong with it.
struct config_error {
  /// Dotted key path, e.g. "api.listen"; empty for syntax errors.
  std::string key;
  /// What is wrong.
  std::string message;
  /// "key: message" (or just the message).
  std::string to_string() const;
};

/// Either a config or an error.
struct load_result {
  node_config config;
  std::vector<config_error> errors;
  bool ok() const {
    return errors.empty();
  }
};

/// Parses and validates TOML text. `origin` names the source in messages.
load_result parse(std::string_view toml_text, std::string_view origin);

/// Reads, parses and validates a config file.
load_result load_file(const std::string& path);

/// The text of the shipped single-node config (config/single-node.toml),
/// compiled into the binary.
std::string_view default_config_text();

} // namespace nimbus::config
