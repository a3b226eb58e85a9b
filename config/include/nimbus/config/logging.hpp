#pragma once

/// One named spdlog logger per top-level folder ("config", "storage", "vmm",
/// "transport", "actors"), all writing to stderr with the same pattern.
/// Messages are lowercase and start with their subject; they never contain
/// secrets or payloads.

#include <spdlog/logger.h>

#include <memory>
#include <string>

namespace nimbus::config {

/// Returns the logger named `folder`, creating it on first use.
std::shared_ptr<spdlog::logger> logger(const std::string& folder);

/// Sets the level of all Nimbus loggers ("info", "debug", ...). Returns false
/// for an unknown level name.
bool set_log_level(const std::string& level);

} // namespace nimbus::config
