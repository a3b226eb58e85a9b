#pragma once

/// The REGISTRY actor: functions and their code, per account.
///
/// It keeps every function in memory and writes each change through the
/// function store before it answers, so an acknowledged change survives a
/// crash and a failed write changes nothing. After every change it tells the
/// subscribed metadata listeners (frontend caches, the assignment) to drop that
/// function, with its RevisionId after the change: changes that keep it (reserved
/// concurrency, the event invoke config) leave warm environments alone. Code is
/// shared by content hash; the registry counts references and deletes code that
/// nothing uses.

#include "nimbus/actors/interfaces.hpp"
#include "nimbus/storage/code_store.hpp"
#include "nimbus/storage/function_store.hpp"

#include <caf/fwd.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nimbus {

/// Settings of the registry.
struct registry_config {
  /// Region for ARNs in messages.
  std::string region = "us-east-1";
  /// Largest unzipped code size.
  uint64_t code_size_unzipped = 250 * 1024 * 1024;
  /// Total code storage per account.
  uint64_t total_code_size = 75ull * 1024 * 1024 * 1024;
  /// Wall clock in Unix milliseconds (injectable for tests).
  std::function<int64_t()> now_ms;
  /// Concurrent executions per account, and what must stay unreserved.
  uint32_t account_concurrency = 1000;
  uint32_t unreserved_minimum = 100;
  /// Told about reserved-concurrency changes (may be null).
  counter_actor counter;
  /// Where code goes: zips flattened into encrypted chunked images, pushed
  /// container images. Null (unit tests): zips are kept as they are in the
  /// function store and image functions can not be created.
  std::shared_ptr<storage::code_store> code;
};

/// Checks a registry config; returns an error text or nothing.
std::string validate(const registry_config& cfg);

/// State of the REGISTRY actor.
struct registry_state {
  static constexpr const char* name = "registry";
  registry_config config;
  std::shared_ptr<storage::function_store> store;
  /// account id -> function name -> record.
  std::map<std::string, std::map<std::string, storage::function_record>> functions;
  /// "<account>/<hex SHA-256>" of a stored zip -> number of functions using it.
  std::map<std::string, uint32_t> code_refs;
  /// Caches to invalidate when a function changes.
  std::vector<metadata_listener_actor> listeners;
};

/// The REGISTRY behavior. `loaded` are the records the store loaded at
/// startup.
registry_actor::behavior_type registry(registry_actor::stateful_pointer<registry_state> self,
                                       registry_config cfg,
                                       std::shared_ptr<storage::function_store> store,
                                       std::vector<storage::function_record> loaded);

/// Spawns the REGISTRY.
registry_actor spawn_registry(caf::actor_system& sys, registry_config cfg,
                              std::shared_ptr<storage::function_store> store,
                              std::vector<storage::function_record> loaded);

} // namespace nimbus
