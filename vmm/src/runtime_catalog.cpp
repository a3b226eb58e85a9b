#include "nimbus/vmm/runtime_catalog.hpp"

namespace nimbus::vmm {

const std::vector<runtime_info>& supported_runtimes() {
  static const std::vector<runtime_info> runtimes = {
    {"provided", runtime_family::provided},     {"provided.al2", runtime_family::provided},
    {"provided.al2023", runtime_family::provided}, {"python3.9", runtime_family::python},
    {"python3.10", runtime_family::python},     {"python3.11", runtime_family::python},
    {"python3.12", runtime_family::python},     {"python3.13", runtime_family::python},
    {"nodejs18.x", runtime_family::node},       {"nodejs20.x", runtime_family::node},
    {"nodejs22.x", runtime_family::node},
  };
  return runtimes;
}

std::optional<runtime_info> find_runtime(std::string_view name) {
  for (const auto& r : supported_runtimes())
    if (r.name == name)
      return r;
  return std::nullopt;
}

} // namespace nimbus::vmm
