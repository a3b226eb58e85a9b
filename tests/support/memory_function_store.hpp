#pragma once

// An in-memory function_store for actor tests, with switches that make the
// next write fail, to test that failed requests leave nothing behind.

#include "nimbus/storage/function_store.hpp"

#include <map>
#include <string>

namespace nimbus::test {

class memory_function_store : public storage::function_store {
public:
  std::map<std::string, std::string> code;
  std::map<std::string, storage::function_record> records; // "account/name"
  bool fail_put_code = false;
  bool fail_put_function = false;
  bool fail_remove_function = false;

  storage::io_status load(std::vector<storage::function_record>& out) override {
    out.clear();
    for (const auto& [_, r] : records)
      out.push_back(r);
    return {};
  }

  storage::io_status put_code(const std::string& hex, std::string_view bytes) override {
    if (fail_put_code)
      return {"injected put_code failure"};
    code[hex] = std::string{bytes};
    return {};
  }

  storage::io_status get_code(const std::string& hex, std::string& out) override {
    auto it = code.find(hex);
    if (it == code.end())
      return {"no such code"};
    out = it->second;
    return {};
  }

  storage::io_status remove_code(const std::string& hex) override {
    code.erase(hex);
    return {};
  }

  storage::io_status put_function(const storage::function_record& r) override {
    if (fail_put_function)
      return {"injected put_function failure"};
    records[r.account_id + "/" + r.name] = r;
    return {};
  }

  storage::io_status remove_function(const std::string& account,
                                     const std::string& name) override {
    if (fail_remove_function)
      return {"injected remove_function failure"};
    records.erase(account + "/" + name);
    return {};
  }
};

} // namespace nimbus::test
