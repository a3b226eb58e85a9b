#include "nimbus/storage/function_record.hpp"

#include "nimbus/storage/json.hpp"

#include <simdjson.h>

#include <ctime>

namespace nimbus::storage {

namespace {

constexpr int64_t format_version = 1;

void write_strings(json_writer& w, const std::vector<std::string>& list) {
  w.begin_array();
  for (const auto& v : list)
    w.value(v);
  w.end_array();
}

/// Reads an optional array of strings; false (with `error`) when present but
/// not an array of strings.
bool read_strings(simdjson::dom::element parent, const char* key, std::vector<std::string>& out,
                  std::string& error) {
  simdjson::dom::element e;
  if (parent[key].get(e) != simdjson::SUCCESS)
    return true;
  simdjson::dom::array list;
  if (e.get_array().get(list)) {
    error = std::string{"non-array field "} + key;
    return false;
  }
  out.clear();
  for (auto item : list) {
    std::string_view v;
    if (item.get_string().get(v)) {
      error = std::string{"non-string entry in "} + key;
      return false;
    }
    out.emplace_back(v);
  }
  return true;
}

/// Reads an optional string field; false (with `error`) when present but not
/// a string.
bool read_optional_string(simdjson::dom::element parent, const char* key, std::string& out,
                          std::string& error) {
  simdjson::dom::element e;
  if (parent[key].get(e) != simdjson::SUCCESS)
    return true;
  std::string_view v;
  if (e.get_string().get(v)) {
    error = std::string{"non-string field "} + key;
    return false;
  }
  out = std::string{v};
  return true;
}

bool read_optional_bool(simdjson::dom::element parent, const char* key, bool& out,
                        std::string& error) {
  simdjson::dom::element e;
  if (parent[key].get(e) != simdjson::SUCCESS)
    return true;
  if (e.get_bool().get(out)) {
    error = std::string{"non-boolean field "} + key;
    return false;
  }
  return true;
}

} // namespace

bool operator==(const image_config& a, const image_config& b) {
  return a.entry_point == b.entry_point && a.entry_point_set == b.entry_point_set
         && a.command == b.command && a.command_set == b.command_set
         && a.working_directory == b.working_directory
         && a.working_directory_set == b.working_directory_set;
}

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
  // The code store's image of the code (absent on records written before
  // the code store, whose zip the function store still holds).
  if (!r.code_image.empty())
    w.key("code_image").value(r.code_image);
  if (r.package_type == "Image") {
    // Container-image fields, written only for Image functions so that Zip
    // records keep their earlier shape.
    w.key("image_uri").value(r.image_uri);
    w.key("resolved_image_uri").value(r.resolved_image_uri);
    const auto& c = r.image_config;
    w.key("image_config").begin_object();
    w.key("entry_point_set").value(c.entry_point_set);
    w.key("entry_point");
    write_strings(w, c.entry_point);
    w.key("command_set").value(c.command_set);
    w.key("command");
    write_strings(w, c.command);
    w.key("working_directory_set").value(c.working_directory_set);
    w.key("working_directory").value(c.working_directory);
    w.end_object();
    w.key("image_argv");
    write_strings(w, r.image_argv);
    w.key("image_workdir").value(r.image_workdir);
    w.key("image_env");
    write_strings(w, r.image_env);
  }
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
  // Container-image fields (added later; absent on Zip records).
  simdjson::dom::element doc_element = doc;
  if (!read_optional_string(doc_element, "image_uri", r.image_uri, error)
      || !read_optional_string(doc_element, "resolved_image_uri", r.resolved_image_uri, error)
      || !read_optional_string(doc_element, "code_image", r.code_image, error)
      || !read_strings(doc_element, "image_argv", r.image_argv, error)
      || !read_optional_string(doc_element, "image_workdir", r.image_workdir, error)
      || !read_strings(doc_element, "image_env", r.image_env, error))
    return std::nullopt;
  simdjson::dom::element image;
  if (doc["image_config"].get(image) == simdjson::SUCCESS) {
    auto& c = r.image_config;
    if (!image.is_object()) {
      error = "non-object field image_config";
      return std::nullopt;
    }
    if (!read_optional_bool(image, "entry_point_set", c.entry_point_set, error)
        || !read_strings(image, "entry_point", c.entry_point, error)
        || !read_optional_bool(image, "command_set", c.command_set, error)
        || !read_strings(image, "command", c.command, error)
        || !read_optional_bool(image, "working_directory_set", c.working_directory_set, error)
        || !read_optional_string(image, "working_directory", c.working_directory, error))
      return std::nullopt;
  }
  if (r.package_type != "Zip" && r.package_type != "Image") {
    error = "unknown package_type " + r.package_type;
    return std::nullopt;
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
