#include "nimbus/storage/function_record.hpp"

#include "nimbus/storage/json.hpp"

#include <simdjson.h>

#include <ctime>

namespace nimbus::storage {

namespace {

constexpr int64_t format_version = 1;

} // namespace

std::string format_last_modified(int64_t unix_ms) {
  std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03d+0000", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

std::string to_json(const function_record& r) {
  json_writer w;
  w.begin_object();
  w.key("format_version").value(format_version);
  w.key("account_id").value(r.account_id);
  w.key("name").value(r.name);
  w.key("runtime").value(r.runtime);
  w.key("role").value(r.role);
  w.key("handler").value(r.handler);
  w.key("description").value(r.description);
  w.key("timeout").value(r.timeout);
  w.key("memory_size").value(r.memory_size);
  w.key("ephemeral_storage").value(r.ephemeral_storage);
  w.key("has_environment").value(r.has_environment);
  w.key("environment").begin_object();
  for (const auto& [k, v] : r.environment)
    w.key(k).value(v);
  w.end_object();
  w.key("architectures").begin_array();
  for (const auto& a : r.architectures)
    w.value(a);
  w.end_array();
  w.key("package_type").value(r.package_type);
  w.key("code_sha256").value(r.code_sha256);
  w.key("code_sha256_hex").value(r.code_sha256_hex);
  w.key("code_size").value(r.code_size);
  w.key("last_modified").value(r.last_modified);
  w.key("revision_id").value(r.revision_id);
  w.key("version").value(r.version);
  w.key("state").value(r.state);
  w.key("last_update_status").value(r.last_update_status);
  w.key("reserved_concurrency").value(r.reserved_concurrency);
  if (r.event_invoke) {
    const auto& e = *r.event_invoke;
    w.key("event_invoke")
      .begin_object()
      .key("maximum_retry_attempts")
      .value(e.maximum_retry_attempts)
      .key("maximum_event_age_seconds")
      .value(e.maximum_event_age_seconds)
      .key("on_success")
      .value(e.on_success)
      .key("on_failure")
      .value(e.on_failure)
      .key("last_modified_ms")
      .value(e.last_modified_ms)
      .end_object();
  }
  w.key("dead_letter_target").value(r.dead_letter_target);
  w.end_object();
  return w.take();
}

std::optional<function_record> function_record_from_json(std::string_view json,
                                                         std::string& error) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded{json};
  simdjson::dom::element doc;
  if (auto err = parser.parse(padded).get(doc)) {
    error = std::string{"not valid JSON: "} + simdjson::error_message(err);
    return std::nullopt;
  }
  function_record r;
  auto str = [&](const char* key, std::string& out) {
    std::string_view v;
    if (doc[key].get_string().get(v)) {
      error = std::string{"missing or non-string field "} + key;
      return false;
    }
    out = std::string{v};
    return true;
  };
  auto i32 = [&](const char* key, int32_t& out) {
    int64_t v = 0;
    if (doc[key].get_int64().get(v)) {
      error = std::string{"missing or non-integer field "} + key;
      return false;
    }
    out = static_cast<int32_t>(v);
    return true;
  };
  int64_t version = 0;
  if (doc["format_version"].get_int64().get(version) || version != format_version) {
    error = "unsupported format_version";
    return std::nullopt;
  }
  bool ok = str("account_id", r.account_id) && str("name", r.name) && str("runtime", r.runtime)
            && str("role", r.role) && str("handler", r.handler)
            && str("description", r.description) && i32("timeout", r.timeout)
            && i32("memory_size", r.memory_size)
            && i32("ephemeral_storage", r.ephemeral_storage)
            && str("package_type", r.package_type) && str("code_sha256", r.code_sha256)
            && str("code_sha256_hex", r.code_sha256_hex)
            && str("last_modified", r.last_modified) && str("revision_id", r.revision_id)
            && str("version", r.version) && str("state", r.state)
            && str("last_update_status", r.last_update_status);
  if (!ok)
    return std::nullopt;
  if (doc["code_size"].get_int64().get(r.code_size)) {
    error = "missing or non-integer field code_size";
    return std::nullopt;
  }
  if (doc["has_environment"].get_bool().get(r.has_environment)) {
    error = "missing or non-boolean field has_environment";
    return std::nullopt;
  }
  // Added after the first records were written: absent means none.
  int64_t reserved = -1;
  if (doc["reserved_concurrency"].get_int64().get(reserved) == simdjson::SUCCESS)
    r.reserved_concurrency = static_cast<int32_t>(reserved);
  // Also added later; a present but malformed object is corruption, not
  // "none", so it fails the load like any other bad field.
  simdjson::dom::element invoke;
  if (doc["event_invoke"].get(invoke) == simdjson::SUCCESS && !invoke.is_null()) {
    event_invoke_config e;
    int64_t retries = 0, age = 0;
    std::string_view on_success, on_failure;
    if (invoke["maximum_retry_attempts"].get_int64().get(retries)
        || invoke["maximum_event_age_seconds"].get_int64().get(age)
        || invoke["on_success"].get_string().get(on_success)
        || invoke["on_failure"].get_string().get(on_failure)
        || invoke["last_modified_ms"].get_int64().get(e.last_modified_ms)) {
      error = "malformed field event_invoke";
      return std::nullopt;
    }
    e.maximum_retry_attempts = static_cast<int32_t>(retries);
    e.maximum_event_age_seconds = static_cast<int32_t>(age);
    e.on_success = std::string{on_success};
    e.on_failure = std::string{on_failure};
    r.event_invoke = std::move(e);
  }
  simdjson::dom::element dead_letter;
  if (doc["dead_letter_target"].get(dead_letter) == simdjson::SUCCESS) {
    std::string_view target;
    if (dead_letter.get_string().get(target)) {
      error = "non-string field dead_letter_target";
      return std::nullopt;
    }
    r.dead_letter_target = std::string{target};
  }
  simdjson::dom::object env;
  if (doc["environment"].get_object().get(env)) {
    error = "missing or non-object field environment";
    return std::nullopt;
  }
  for (auto field : env) {
    std::string_view v;
    if (field.value.get_string().get(v)) {
      error = "non-string environment value";
      return std::nullopt;
    }
    r.environment.emplace(std::string{field.key}, std::string{v});
  }
  simdjson::dom::array archs;
  if (doc["architectures"].get_array().get(archs)) {
    error = "missing or non-array field architectures";
    return std::nullopt;
  }
  r.architectures.clear();
  for (auto a : archs) {
    std::string_view v;
    if (a.get_string().get(v)) {
      error = "non-string architecture";
      return std::nullopt;
    }
    r.architectures.emplace_back(v);
  }
  return r;
}

} // namespace nimbus::storage
