#pragma once

/// The runtimes Nimbus can start inside an execution environment, and how.
///
/// `provided*` runtimes run the function's own /var/task/bootstrap; the
/// python and node runtimes run Nimbus's bootstrap for that language (shipped
/// under runtimes/) with the host's interpreter. The registry consults this
/// catalogue to reject functions whose runtime Nimbus cannot run.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::vmm {

/// How a runtime is started.
enum class runtime_family {
  /// /var/task/bootstrap is the runtime.
  provided,
  /// Nimbus's Python bootstrap with the host's python3.
  python,
  /// Nimbus's Node.js bootstrap with the host's node.
  node,
};

/// One supported runtime identifier.
struct runtime_info {
  /// The Lambda identifier, e.g. "python3.11".
  std::string name;
  runtime_family family;
};

/// Looks up a runtime identifier; nothing if Nimbus does not support it.
std::optional<runtime_info> find_runtime(std::string_view name);

/// All supported runtime identifiers, in a stable order (for error messages).
const std::vector<runtime_info>& supported_runtimes();

} // namespace nimbus::vmm
