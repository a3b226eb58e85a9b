#include "nimbus/config/config.hpp"

#include <toml++/toml.h>

#include <fstream>
#include <set>
#include <sstream>

namespace nimbus::config {

std::string config_error::to_string() const {
  return key.empty() ? message : key + ": " + message;
}

namespace {

/// Walks one TOML table, reading known keys and remembering which were seen
/// so that the remaining ones can be reported as unknown.
class table_reader {
public:
  table_reader(const toml::table& table, std::string prefix, std::vector<config_error>& errors)
    : table_(table), prefix_(std::move(prefix)), errors_(errors) {
  }

  ~table_reader() {
    for (const auto& [k, _] : table_)
      if (seen_.count(std::string{k.str()}) == 0)
        errors_.push_back({key(k.str()), "unknown key"});
  }

  std::string key(std::string_view k) const {
    return prefix_.empty() ? std::string{k} : prefix_ + "." + std::string{k};
  }

  void string(std::string_view k, std::string& out) {
    seen_.insert(std::string{k});
    auto node = table_.get(k);
    if (!node)
      return;
    if (auto v = node->value<std::string>(); v && node->is_string())
      out = *v;
    else
      errors_.push_back({key(k), "expected a string"});
  }

  template <class T>
  void integer(std::string_view k, T& out, int64_t min, int64_t max) {
    seen_.insert(std::string{k});
    auto node = table_.get(k);
    if (!node)
      return;
    if (!node->is_integer()) {
      errors_.push_back({key(k), "expected an integer"});
      return;
    }
    auto v = *node->value<int64_t>();
    if (v < min || v > max) {
      errors_.push_back({key(k), "must be between " + std::to_string(min) + " and "
                                   + std::to_string(max) + ", got " + std::to_string(v)});
      return;
    }
    out = static_cast<T>(v);
  }

  void boolean(std::string_view k, bool& out) {
    seen_.insert(std::string{k});
    auto node = table_.get(k);
    if (!node)
      return;
    if (!node->is_boolean()) {
      errors_.push_back({key(k), "expected true or false"});
      return;
    }
    out = *node->value<bool>();
  }

  void number(std::string_view k, double& out, double min, double max) {
    seen_.insert(std::string{k});
    auto node = table_.get(k);
    if (!node)
      return;
    if (!node->is_number()) {
      errors_.push_back({key(k), "expected a number"});
      return;
    }
    auto v = *node->value<double>();
    if (v < min || v > max) {
      errors_.push_back({key(k), "must be between " + std::to_string(min) + " and "
                                   + std::to_string(max)});
      return;
    }
    out = v;
  }

  template <class Duration>
  void duration(std::string_view k, Duration& out, int64_t min, int64_t max) {
    int64_t v = out.count();
    integer(k, v, min, max);
    out = Duration{v};
  }

  const toml::table* table(std::string_view k) {
    seen_.insert(std::string{k});
    auto node = table_.get(k);
    if (!node)
      return nullptr;
    if (!node->is_table()) {
      errors_.push_back({key(k), "expected a table"});
      return nullptr;
    }
    return node->as_table();
  }

  const toml::array* array(std::string_view k) {
    seen_.insert(std::string{k});
    auto node = table_.get(k);
    if (!node)
      return nullptr;
    if (!node->is_array()) {
      errors_.push_back({key(k), "expected an array of tables ([[" + key(k) + "]])"});
      return nullptr;
    }
    return node->as_array();
  }

private:
  const toml::table& table_;
  std::string prefix_;
  std::vector<config_error>& errors_;
  std::set<std::string> seen_;
};

bool all_digits(std::string_view s) {
  for (char c : s)
    if (c < '0' || c > '9')
      return false;
  return !s.empty();
}

void parse_listen(const std::string& text, api_config& api, std::vector<config_error>& errors) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || !all_digits(text.substr(colon + 1))
      || text.size() - colon - 1 > 5) {
    errors.push_back({"api.listen", "expected \"host:port\", got \"" + text + "\""});
    return;
  }
  auto port = std::stoul(text.substr(colon + 1));
  if (port > 65535) {
    errors.push_back({"api.listen", "port must be at most 65535, got " + std::to_string(port)});
    return;
  }
  api.listen_address = text.substr(0, colon);
  api.listen_port = static_cast<uint16_t>(port);
}

void validate(node_config& cfg, std::vector<config_error>& errors) {
  if (cfg.node_name.empty())
    errors.push_back({"node.name", "must not be empty"});
  if (cfg.data_dir.empty())
    errors.push_back({"node.data_dir", "must not be empty"});
  if (cfg.region.empty())
    errors.push_back({"node.region", "must not be empty"});
  static const std::set<std::string> levels
    = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (levels.count(cfg.log.level) == 0)
    errors.push_back({"log.level", "must be one of trace, debug, info, warn, error, critical, "
                                   "off; got \"" + cfg.log.level + "\""});
  if (cfg.limits.unreserved_concurrency_minimum > cfg.limits.concurrent_executions)
    errors.push_back({"limits.unreserved_concurrency_minimum",
                      "must not exceed limits.concurrent_executions"});
  if (cfg.code.convergence_domain != "account" && cfg.code.convergence_domain != "global")
    errors.push_back({"code.convergence_domain", "must be \"account\" or \"global\""});
  if (cfg.async.pollers_min > cfg.async.pollers_max)
    errors.push_back({"async.pollers_min", "must not exceed async.pollers_max"});
  if (cfg.async.backoff_initial > cfg.async.backoff_max)
    errors.push_back({"async.backoff_initial_ms", "must not exceed async.backoff_max_ms"});
  if (cfg.accounts.empty())
    errors.push_back({"accounts", "at least one [[accounts]] entry is required"});
  std::set<std::string> ids, keys;
  for (size_t i = 0; i < cfg.accounts.size(); ++i) {
    auto& a = cfg.accounts[i];
    auto k = "accounts[" + std::to_string(i) + "]";
    if (a.id.size() != 12 || !all_digits(a.id))
      errors.push_back({k + ".id", "must be a 12-digit account id, got \"" + a.id + "\""});
    else if (!ids.insert(a.id).second)
      errors.push_back({k + ".id", "duplicate account id " + a.id});
    if (a.access_key_id.size() < 16 || a.access_key_id.size() > 128)
      errors.push_back({k + ".access_key_id", "must be 16 to 128 characters"});
    else if (!keys.insert(a.access_key_id).second)
      errors.push_back({k + ".access_key_id", "duplicate access key id"});
    if (a.secret_access_key.size() < 16)
      errors.push_back({k + ".secret_access_key", "must be at least 16 characters"});
  }
}

} // namespace

load_result parse(std::string_view toml_text, std::string_view origin) {
  load_result result;
  toml::table root;
  try {
    root = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << std::string{origin} << ":" << e.source().begin.line << ":" << e.source().begin.column
        << ": " << e.description();
    result.errors.push_back({"", msg.str()});
    return result;
  }
  auto& cfg = result.config;
  auto& errors = result.errors;
  {
    table_reader top{root, "", errors};
    if (auto t = top.table("node")) {
      table_reader r{*t, "node", errors};
      r.string("name", cfg.node_name);
      r.string("data_dir", cfg.data_dir);
      r.string("region", cfg.region);
    }
    if (auto t = top.table("api")) {
      table_reader r{*t, "api", errors};
      std::string listen;
      r.string("listen", listen);
      if (!listen.empty())
        parse_listen(listen, cfg.api, errors);
      r.integer("io_threads", cfg.api.io_threads, 0, 256);
      r.boolean("pin_io_threads", cfg.api.pin_io_threads);
      r.integer("io_threads_nice", cfg.api.io_threads_nice, -20, 19);
      r.integer("max_header_bytes", cfg.api.max_header_bytes, 1024, 1 << 20);
      r.duration("header_timeout_ms", cfg.api.header_timeout, 100, 600'000);
      r.duration("body_timeout_ms", cfg.api.body_timeout, 100, 3'600'000);
      r.duration("idle_timeout_ms", cfg.api.idle_timeout, 100, 3'600'000);
      r.integer("max_pipeline", cfg.api.max_pipeline, 1, 1024);
      r.duration("clock_skew_seconds", cfg.api.clock_skew, 1, 86'400);
      r.boolean("authenticate", cfg.api.authenticate);
      r.duration("request_timeout_ms", cfg.api.request_timeout, 100, 3'600'000);
    }
    if (auto t = top.table("limits")) {
      table_reader r{*t, "limits", errors};
      auto& l = cfg.limits;
      r.integer("concurrent_executions", l.concurrent_executions, 1, 1'000'000);
      r.integer("control_body_bytes", l.control_body_bytes, 1024, int64_t{1} << 32);
      r.integer("code_size_zipped", l.code_size_zipped, 1024, int64_t{1} << 32);
      r.integer("code_size_unzipped", l.code_size_unzipped, 1024, int64_t{1} << 40);
      r.integer("total_code_size", l.total_code_size, 1024, int64_t{1} << 50);
      r.integer("environment_bytes", l.environment_bytes, 0, 1 << 20);
      r.integer("invoke_payload_bytes", l.invoke_payload_bytes, 1024, int64_t{1} << 30);
      r.integer("unreserved_concurrency_minimum", l.unreserved_concurrency_minimum, 0, 1'000'000);
      r.integer("scale_burst", l.scale_burst, 1, 1'000'000);
      r.duration("scale_refill_ms", l.scale_refill, 1, 3'600'000);
    }
    if (auto t = top.table("worker")) {
      table_reader r{*t, "worker", errors};
      auto& w = cfg.worker;
      r.boolean("enabled", w.enabled);
      r.integer("memory_mb", w.memory_mb, 0, int64_t{1} << 30);
      r.string("jail_helper", w.jail_helper);
      r.string("runtimes_dir", w.runtimes_dir);
      r.integer("first_uid", w.first_uid, 1000, 4'000'000'000);
      r.duration("init_timeout_ms", w.init_timeout, 100, 900'000);
      r.duration("keep_alive_seconds", w.keep_alive, 1, 86'400 * 7);
      r.duration("max_lifetime_seconds", w.max_lifetime, 1, 86'400 * 7);
      r.number("packing", w.packing, 0.0, 1.0);
      r.integer("log_file_bytes", w.log_file_bytes, 4096, int64_t{1} << 34);
      r.integer("runtime_io_threads", w.runtime_io_threads, 0, 64);
      r.integer("pin_below_mb", w.pin_below_mb, 0, 1 << 20);
    }
    if (auto t = top.table("async")) {
      table_reader r{*t, "async", errors};
      auto& a = cfg.async;
      r.integer("payload_bytes", a.payload_bytes, 1024, int64_t{64} << 20);
      r.integer("partitions", a.partitions, 1, 1024);
      r.integer("pollers_min", a.pollers_min, 1, 1024);
      r.integer("pollers_max", a.pollers_max, 1, 1024);
      r.duration("visibility_margin_ms", a.visibility_margin, 10, 3'600'000);
      r.duration("retry_delay_first_ms", a.retry_delay_first, 1, 3'600'000);
      r.duration("retry_delay_second_ms", a.retry_delay_second, 1, 3'600'000);
      r.duration("backoff_initial_ms", a.backoff_initial, 1, 3'600'000);
      r.duration("backoff_max_ms", a.backoff_max, 1, 3'600'000);
      r.duration("tick_ms", a.tick, 1, 60'000);
      r.integer("segment_bytes", a.segment_bytes, 4096, int64_t{1} << 34);
    }
    if (auto t = top.table("code")) {
      table_reader r{*t, "code", errors};
      auto& c = cfg.code;
      r.string("convergence_domain", c.convergence_domain);
      r.string("master_key_file", c.master_key_file);
      r.integer("image_bytes", c.image_bytes, 1 << 20, int64_t{1} << 40);
      r.integer("cache_memory_bytes", c.cache_memory_bytes, 1 << 20, int64_t{1} << 40);
      r.integer("cache_disk_bytes", c.cache_disk_bytes, 0, int64_t{1} << 44);
      r.boolean("lazy", c.lazy);
      r.duration("mount_linger_seconds", c.mount_linger, 0, 86'400);
    }
    if (auto t = top.table("log")) {
      table_reader r{*t, "log", errors};
      r.string("level", cfg.log.level);
    }
    if (auto arr = top.array("accounts")) {
      for (size_t i = 0; i < arr->size(); ++i) {
        auto key = "accounts[" + std::to_string(i) + "]";
        auto t = (*arr)[i].as_table();
        if (!t) {
          errors.push_back({key, "expected a table"});
          continue;
        }
        account a;
        table_reader r{*t, key, errors};
        r.string("id", a.id);
        r.string("access_key_id", a.access_key_id);
        r.string("secret_access_key", a.secret_access_key);
        cfg.accounts.push_back(std::move(a));
      }
    }
  }
  // Report every problem at once, including those of a partly read config.
  validate(cfg, errors);
  return result;
}

load_result load_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    load_result result;
    result.errors.push_back({"", "cannot read config file " + path});
    return result;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

} // namespace nimbus::config
