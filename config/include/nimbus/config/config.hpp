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
  /// Number of HTTP io threads; 0: one per CPU nimbusd may use.
  uint32_t io_threads = 0;
  /// Give io thread i an event loop of its own and bind it to the i-th CPU
  /// nimbusd may use; client connections are spread over them. A
  /// connection, the actors it reaches and (see worker_config::pin_below_mb)
  /// the runtime that answers it then stay on one CPU. False: the io threads
  /// share one event loop and run on any CPU.
  bool pin_io_threads = true;
  /// Nice value of the io threads (and of the Runtime API's, when separate).
  /// Below the runtimes' 0: every invocation passes through these threads,
  /// and each time one is switched out for a runtime, the requests of all
  /// its connections wait (bench/README.md has the A/B runs).
  int32_t io_threads_nice = -5;
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
  /// Verify SigV4 signatures. Only benchmarks switch this off: then every
  /// request acts as the first configured account.
  bool authenticate = true;
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
  /// Largest synchronous Invoke payload.
  uint64_t invoke_payload_bytes = 6 * 1024 * 1024;
  /// Concurrency that must stay unreserved per account.
  uint32_t unreserved_concurrency_minimum = 100;
  /// New environments per function: bucket size and refill time.
  uint32_t scale_burst = 1000;
  std::chrono::milliseconds scale_refill{10'000};
};

/// The execution-environment host of this node.
struct worker_settings {
  /// Run functions on this node (needs root, namespaces and cgroups).
  bool enabled = true;
  /// Memory handed to environments, in MB (0: 80% of the machine's).
  uint64_t memory_mb = 0;
  /// The nimbus-jail helper (empty: next to nimbusd).
  std::string jail_helper;
  /// Nimbus's runtime bootstraps (empty: the runtimes/ folder of the source
  /// tree nimbusd was built from).
  std::string runtimes_dir;
  /// First of the uids environments run as.
  uint32_t first_uid = 10001;
  std::chrono::milliseconds init_timeout{10'000};
  /// Idle environments retire after this long; all after max_lifetime.
  std::chrono::seconds keep_alive{600};
  std::chrono::seconds max_lifetime{7200};
  /// Placement policy: 1 packs environments densely, 0 spreads them.
  double packing = 0.5;
  /// Function log files rotate at this size.
  uint64_t log_file_bytes = 1 << 20;
  /// Io threads serving the Runtime API of all environments; 0 serves it on
  /// the Lambda API's io threads (an invocation then goes from the client's
  /// connection to the runtime's and back without a hand-off between threads).
  uint32_t runtime_io_threads = 0;
  /// Functions with less memory run on the CPU of the io thread that serves
  /// their Runtime API, when io threads are pinned, one on every CPU
  /// (Lambda gives one vCPU at 1,769 MB); 0 pins none.
  uint32_t pin_below_mb = 1769;
};

/// The asynchronous invocation path (X-Amz-Invocation-Type: Event).
struct async_config {
  /// Largest Event payload (AWS: 1 MB; older clients assume 256 KB).
  uint64_t payload_bytes = 1024 * 1024;
  /// Queue partitions; functions are spread over them by a hash.
  uint32_t partitions = 1;
  /// Pollers per partition: the queue manager keeps between min and max,
  /// adding pollers while events wait and removing idle ones.
  uint32_t pollers_min = 1;
  uint32_t pollers_max = 16;
  /// A leased event becomes visible again after the function's timeout plus
  /// this margin if its poller has not finished it.
  std::chrono::milliseconds visibility_margin{30'000};
  /// Waits before the retries after function errors (AWS: 1 min, then 2 min).
  std::chrono::milliseconds retry_delay_first{60'000};
  std::chrono::milliseconds retry_delay_second{120'000};
  /// Backoff after throttles and system errors: doubles from initial to max.
  std::chrono::milliseconds backoff_initial{1'000};
  std::chrono::milliseconds backoff_max{300'000};
  /// Scale resolution of the queue manager and the queues' housekeeping.
  std::chrono::milliseconds tick{1'000};
  /// Queue log segments roll at this size.
  uint64_t segment_bytes = 64ull << 20;
};

/// Code storage: chunked, encrypted, deduplicated images (ARCHITECTURE.md §5).
struct code_config {
  /// "account": identical chunks are shared only within an account (CS-1);
  /// "global": across all accounts of the node.
  std::string convergence_domain = "account";
  /// The master key wrapping the accounts' data keys; empty means
  /// data_dir/code/keys/master.key, created at first start (mode 0600).
  std::string master_key_file;
  /// Largest pushed container image archive, and largest flattened image.
  uint64_t image_bytes = 10ull << 30;
  /// The worker's chunk cache: verified plaintext in memory, sealed chunks
  /// on disk (the disk tier is skipped while the chunk store is local).
  uint64_t cache_memory_bytes = 256ull << 20;
  uint64_t cache_disk_bytes = 4ull << 30;
  /// Serve images lazily through FUSE; false (or no FUSE) copies each image
  /// out of the store before it is mounted.
  bool lazy = true;
  /// How long a code image no environment uses stays mounted (0: unmount at
  /// once). A new environment of the same code then skips the mount and
  /// finds the runtime's files in the page cache.
  std::chrono::seconds mount_linger{300};
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
  worker_settings worker;
  async_config async;
  code_config code;
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
