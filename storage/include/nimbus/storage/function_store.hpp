#pragma once

/// The registry's persistence interface: function records and their code.
///
/// The registry keeps everything in memory and writes through this interface
/// before it answers. Code is content-addressed by its hex SHA-256, so two
/// functions with the same zip share one stored copy; the registry counts the
/// references and removes code nobody uses. The chunked, encrypted code store
/// replaces the file implementation later without touching the registry.

#include "nimbus/storage/durable_file.hpp"
#include "nimbus/storage/function_record.hpp"

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::storage {

/// Where functions and code are kept.
class function_store {
public:
  virtual ~function_store() = default;

  /// Loads every stored function; called once at startup. Also removes
  /// leftovers of interrupted writes and code that no record references.
  virtual io_status load(std::vector<function_record>& out) = 0;

  /// Stores code under `sha256_hex`; durable when this returns ok. Storing
  /// code that already exists is a cheap no-op.
  virtual io_status put_code(const std::string& sha256_hex, std::string_view bytes) = 0;

  /// Reads code previously stored.
  virtual io_status get_code(const std::string& sha256_hex, std::string& out) = 0;

  /// Removes stored code (no-op if absent).
  virtual io_status remove_code(const std::string& sha256_hex) = 0;

  /// Stores (creates or replaces) a function record durably.
  virtual io_status put_function(const function_record& record) = 0;

  /// Removes a function record durably (no-op if absent).
  virtual io_status remove_function(const std::string& account_id, const std::string& name) = 0;
};

/// Creates the file-based store rooted at `directory`:
///   <directory>/functions/<account>/<name>.json   one record each
///   <directory>/code/<sha256-hex>.zip             one zip each
/// Every write is atomic and durable (see durable_file.hpp).
std::unique_ptr<function_store> make_file_function_store(std::string directory);

} // namespace nimbus::storage
