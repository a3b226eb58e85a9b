#pragma once

/// The FRONTEND actor: the bridge between HTTP and the actors.
///
/// For each request it routes (transport::lambda::match), authenticates with
/// SigV4 against the configured accounts, parses and validates the body, asks
/// the REGISTRY, and renders the AWS response or error. Function metadata it
/// read is cached until the registry says the function changed. Every request to
/// another actor carries a timeout and an error branch. It records request
/// metrics and serves /health and /metrics.

#include "nimbus/actors/interfaces.hpp"
#include "nimbus/storage/code_store.hpp"
#include "nimbus/config/config.hpp"
#include "nimbus/transport/lambda_codec.hpp"
#include "nimbus/storage/function_logs.hpp"
#include "nimbus/transport/metrics.hpp"

#include <caf/fwd.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace simdjson::dom {
class parser;
} // namespace simdjson::dom

namespace nimbus {

/// Invocation metrics (Prometheus text), shared by the frontends of a node
/// (one per io shard, see frontend_config::invocations); thread-safe.
class invoke_metrics {
public:
  std::atomic<uint64_t> invocations{0};
  std::atomic<uint64_t> function_errors{0};
  std::atomic<uint64_t> throttles{0};
  std::atomic<uint64_t> cold_starts{0};
  std::atomic<int64_t> concurrent{0};
  /// Function metadata lookups answered from a frontend's cache, and from
  /// the registry.
  std::atomic<uint64_t> cache_hits{0};
  std::atomic<uint64_t> cache_misses{0};

  /// Records an INIT or an invocation duration.
  void observe_init(int64_t micros);
  void observe_invoke(int64_t micros);

  /// All of the above as Prometheus text.
  std::string render() const;

private:
  struct histogram {
    /// Counts over transport::api_metrics::buckets() (seconds).
    std::vector<uint64_t> counts;
    double sum = 0;
    uint64_t count = 0;
  };
  mutable std::mutex mutex_;
  histogram init_;
  histogram invoke_;
};

/// The metadata cache, (account id, name) -> function record, shared by the
/// frontends of a node; thread-safe. Kept coherent by the registry's change
/// notices: every frontend erases on a notice, and it gets the notice before
/// any request that follows the change. A record read from the registry is
/// kept only if nothing was erased meanwhile (see ticket()), so an answer
/// that raced a change can not put the old record back.
class metadata_cache {
public:
  using key_type = std::pair<std::string, std::string>;

  explicit metadata_cache(size_t capacity = 10'000) : capacity_(capacity) {}

  /// The cached record, or null.
  std::shared_ptr<const storage::function_record> find(const key_type& key) const;

  /// Taken before asking the registry, handed to insert() with its answer.
  uint64_t ticket() const;

  /// Caches a record read from the registry (evicting an arbitrary entry
  /// when full), unless an entry was erased since `ticket` was taken.
  void insert(const key_type& key, const storage::function_record& record, uint64_t ticket);

  /// Forgets a function (a change notice).
  void erase(const key_type& key);

  size_t size() const;

private:
  mutable std::mutex mutex_;
  std::map<key_type, std::shared_ptr<const storage::function_record>> entries_;
  /// Erasures so far.
  uint64_t erased_ = 0;
  size_t capacity_;
};

/// Settings of the frontend.
struct frontend_config {
  std::string node_name = "nimbus-1";
  std::string region = "us-east-1";
  std::vector<config::account> accounts;
  /// Allowed SigV4 clock skew.
  std::chrono::seconds clock_skew{300};
  /// False only in benchmark configs: requests act as the first account.
  bool authenticate = true;
  /// Time the registry has to answer.
  std::chrono::milliseconds request_timeout{30'000};
  /// Limits the codec enforces.
  transport::lambda::codec_limits codec;
  /// Account limits reported by GetAccountSettings.
  config::limits_config limits;
  /// Wall clock (injectable for tests).
  std::function<std::chrono::system_clock::time_point()> now;
  /// Where request metrics go.
  std::shared_ptr<transport::api_metrics> metrics;
  /// Key for the code download links; random per process when empty.
  std::string download_key;
  /// Where function logs go (may be null: then logs are only returned with
  /// --log-type Tail).
  std::shared_ptr<storage::function_log_store> logs;
  /// The async path (may be null: then Invoke with Event answers 500).
  queue_manager_actor queues;
  /// Largest Event payload.
  uint64_t async_payload_bytes = 1024 * 1024;
  /// Stores pushed container images (may be null: pushes answer 500).
  std::shared_ptr<storage::code_store> code;
  /// More Prometheus text for /metrics (code storage); may be empty.
  std::function<std::string()> extra_metrics;
  /// Invocation metrics, shared by all frontends of the node (null: the
  /// frontend keeps its own).
  std::shared_ptr<invoke_metrics> invocations;
  /// The metadata cache, shared by all frontends of the node (null: the
  /// frontend keeps its own).
  std::shared_ptr<metadata_cache> cache;
};

/// Checks a frontend config; returns an error text or nothing.
std::string validate(const frontend_config& cfg);

/// State of the FRONTEND actor.
struct frontend_state {
  static constexpr const char* name = "frontend";
  frontend_config config;
  registry_actor registry;
  counter_actor counter;
  assignment_actor assignment;
  /// config.invocations.
  std::shared_ptr<invoke_metrics> invocations;
  /// access key id -> account.
  std::map<std::string, config::account> by_access_key;
  /// config.cache.
  std::shared_ptr<metadata_cache> cache;
  /// Validates invoke payloads; kept so its buffers are reused.
  std::shared_ptr<simdjson::dom::parser> json;
};

/// The FRONTEND behavior.
frontend_actor::behavior_type frontend(frontend_actor::stateful_pointer<frontend_state> self,
                                       frontend_config cfg, registry_actor registry,
                                       counter_actor counter, assignment_actor assignment);

/// Spawns the FRONTEND. Without counter and assignment, Invoke answers 500.
frontend_actor spawn_frontend(caf::actor_system& sys, frontend_config cfg,
                              registry_actor registry, counter_actor counter = {},
                              assignment_actor assignment = {});

} // namespace nimbus
