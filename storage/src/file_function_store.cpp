#include "nimbus/config/logging.hpp"
#include "nimbus/storage/function_store.hpp"

#include <unistd.h>

#include <set>

namespace nimbus::storage {

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool is_hex_digest(std::string_view s) {
  if (s.size() != 64)
    return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return true;
}

class file_function_store final : public function_store {
public:
  explicit file_function_store(std::string directory)
    : root_(std::move(directory)), functions_(root_ + "/functions"), code_(root_ + "/code") {
  }

  io_status load(std::vector<function_record>& out) override {
    out.clear();
    if (auto s = make_directories(functions_); !s.ok())
      return s;
    if (auto s = make_directories(code_); !s.ok())
      return s;
    auto log = config::logger("storage");
    std::vector<std::string> accounts;
    if (auto s = list_directory(functions_, accounts); !s.ok())
      return s;
    std::set<std::string> referenced;
    for (const auto& account : accounts) {
      auto dir = functions_ + "/" + account;
      std::vector<std::string> files;
      if (auto s = list_directory(dir, files); !s.ok())
        return s;
      for (const auto& file : files) {
        auto path = dir + "/" + file;
        if (ends_with(file, temp_suffix)) {
          log->info("storage removes leftover temporary file {}", path);
          if (auto s = remove_file_durable(path); !s.ok())
            return s;
          continue;
        }
        if (!ends_with(file, ".json"))
          return {"unexpected file " + path};
        std::string text;
        if (auto s = read_file(path, text); !s.ok())
          return s;
        std::string error;
        auto record = function_record_from_json(text, error);
        // A record that does not parse is corruption: report it instead of
        // starting without the function.
        if (!record)
          return {"corrupt function record " + path + ": " + error};
        if (record->account_id != account || record->name + ".json" != file)
          return {"function record " + path + " names another function"};
        // Code kept in the code store (a flattened image, or a pushed
        // container image) is not this store's to check.
        if (record->code_image.empty() && record->package_type != "Image")
          referenced.insert(record->code_sha256_hex);
        out.push_back(std::move(*record));
      }
    }
    std::vector<std::string> code_files;
    if (auto s = list_directory(code_, code_files); !s.ok())
      return s;
    std::set<std::string> present;
    for (const auto& file : code_files) {
      auto path = code_ + "/" + file;
      auto hex = file.substr(0, file.find('.'));
      bool temp = ends_with(file, temp_suffix);
      if (!temp && ends_with(file, ".zip") && is_hex_digest(hex) && referenced.count(hex)) {
        present.insert(hex);
        continue;
      }
      // Code written by a create that crashed before its record, or left by a
      // delete that crashed after removing its record: nobody references it.
      log->info("storage removes unreferenced code file {}", file);
      if (auto s = remove_file_durable(path); !s.ok())
        return s;
    }
    for (const auto& hex : referenced)
      if (present.count(hex) == 0)
        return {"code " + hex + " referenced by a function record is missing"};
    return {};
  }

  io_status put_code(const std::string& sha256_hex, std::string_view bytes) override {
    auto path = code_path(sha256_hex);
    if (::access(path.c_str(), F_OK) == 0)
      return {};
    return write_file_atomic(path, bytes);
  }

  io_status get_code(const std::string& sha256_hex, std::string& out) override {
    return read_file(code_path(sha256_hex), out);
  }

  io_status remove_code(const std::string& sha256_hex) override {
    return remove_file_durable(code_path(sha256_hex));
  }

  io_status put_function(const function_record& record) override {
    auto dir = functions_ + "/" + record.account_id;
    if (auto s = make_directories(dir); !s.ok())
      return s;
    return write_file_atomic(dir + "/" + record.name + ".json", to_json(record));
  }

  io_status remove_function(const std::string& account_id, const std::string& name) override {
    return remove_file_durable(functions_ + "/" + account_id + "/" + name + ".json");
  }

private:
  // Only ever called with registry-computed digests; the check keeps a bad
  // caller from naming a path outside the code directory.
  std::string code_path(const std::string& hex) const {
    if (!is_hex_digest(hex))
      return code_ + "/invalid-digest";
    return code_ + "/" + hex + ".zip";
  }

  std::string root_;
  std::string functions_;
  std::string code_;
};

} // namespace

std::unique_ptr<function_store> make_file_function_store(std::string directory) {
  return std::make_unique<file_function_store>(std::move(directory));
}

} // namespace nimbus::storage
