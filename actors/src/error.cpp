#include "nimbus/actors/error.hpp"

#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace nimbus {

std::string to_string(ec x) {
  switch (x) {
    case ec::none: return "none";
    case ec::invalid_parameter: return "invalid_parameter";
    case ec::invalid_request_content: return "invalid_request_content";
    case ec::resource_not_found: return "resource_not_found";
    case ec::resource_conflict: return "resource_conflict";
    case ec::precondition_failed: return "precondition_failed";
    case ec::code_storage_exceeded: return "code_storage_exceeded";
    case ec::storage_failure: return "storage_failure";
    case ec::service_failure: return "service_failure";
    case ec::init_failed: return "init_failed";
    case ec::environment_unavailable: return "environment_unavailable";
    case ec::throttled: return "throttled";
  }
  return "unknown";
}

std::string error_message(const caf::error& err) {
  const auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  if (err.category() == caf::atom("system"))
    return caf::to_string(static_cast<caf::sec>(err.code()));
  return caf::to_string(err);
}

} // namespace nimbus
