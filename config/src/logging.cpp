#include "nimbus/config/logging.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace nimbus::config {

namespace {

std::mutex mutex;
spdlog::level::level_enum current_level = spdlog::level::info;

} // namespace

std::shared_ptr<spdlog::logger> logger(const std::string& folder) {
  std::lock_guard<std::mutex> guard{mutex};
  if (auto existing = spdlog::get(folder))
    return existing;
  auto created = spdlog::stderr_color_mt(folder);
  created->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [%n] %v");
  created->set_level(current_level);
  return created;
}

bool set_log_level(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off")
    return false;
  std::lock_guard<std::mutex> guard{mutex};
  current_level = parsed;
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) { l->set_level(parsed); });
  return true;
}

} // namespace nimbus::config
