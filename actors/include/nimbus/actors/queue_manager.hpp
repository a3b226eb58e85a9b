#pragma once

/// The QUEUE MANAGER actor: owns the queue partitions of this node and their
/// pollers. It routes each event to the partition of its function (a hash of
/// account and name), and every tick scales each partition's pollers between
/// pollers_min and pollers_max: one more while events wait with no poller
/// free, one fewer while pollers wait with nothing to do.

#include "nimbus/actors/interfaces.hpp"
#include "nimbus/actors/queue.hpp"
#include "nimbus/config/config.hpp"
#include "nimbus/storage/function_logs.hpp"

#include <caf/fwd.hpp>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace nimbus {

/// Settings of the queue manager.
struct queue_manager_config {
  std::string region = "us-east-1";
  /// Partition logs go to <dir>/p<N>.
  std::string dir;
  /// Nimbus message queues (destinations, dead-letter queues) go to
  /// <mq_dir>/<account>/<name>; empty: <dir>/../message-queues.
  std::string mq_dir;
  config::async_config async;
  /// Unix time in ms (tests substitute a clock).
  std::function<int64_t()> now_ms;
  /// File operations of the logs (real files when null).
  std::shared_ptr<storage::log_fs> fs;
  registry_actor registry;
  counter_actor counter;
  assignment_actor assignment;
  /// Where the pollers append the functions' logs (may be null).
  std::shared_ptr<storage::function_log_store> logs;
};

/// State of the QUEUE MANAGER.
struct queue_manager_state {
  static constexpr const char* name = "queue_manager";
  struct partition {
    queue_actor queue;
    std::vector<poller_actor> pollers;
  };
  queue_manager_config config;
  std::vector<partition> partitions;
  /// Open Nimbus message queues by (account, name).
  std::map<std::pair<std::string, std::string>, queue_actor> message_queues;
};

/// True for a valid Nimbus message queue name (SQS's rule: 1-80 of
/// [A-Za-z0-9_-]).
bool valid_queue_name(const std::string& name);

/// The partition of a function among `n`.
size_t partition_of(const std::string& account, const std::string& function, size_t n);

/// Opens every partition (recovering its log) and spawns the manager with
/// pollers_min pollers per partition. Nothing (with `error`) if a log cannot
/// be opened.
std::optional<queue_manager_actor> spawn_queue_manager(caf::actor_system& sys,
                                                       queue_manager_config cfg,
                                                       std::string& error);

} // namespace nimbus
