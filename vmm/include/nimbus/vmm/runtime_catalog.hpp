#pragma once

/// The runtimes Nimbus can start inside an execution environment, and how.
///
/// `provided*` runtimes run the function's own /var/task/bootstrap; the
/// python and node runtimes run Nimbus's bootstrap for that language (shipped
/// under runtimes/) with the host's interpreter. The registry consults this
/// catalogue to reject functions whose runtime Nimbus cannot run.

#include <cstdint>
#include <map>
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

/// The command that starts a runtime inside the sandbox (paths as seen inside).
std::vector<std::string> runtime_command(const runtime_info& runtime);

/// What a function's runtime environment is made of (LAMBDA-API.md B.12).
struct function_environment {
  std::string function_name;
  std::string version = "$LATEST";
  std::string handler;
  std::string region;
  int32_t memory_mb = 128;
  /// Names the log stream, e.g. "2026/11/27/[$LATEST]<id>".
  std::string log_stream;
  /// The function's own variables (reserved names were rejected at create).
  std::map<std::string, std::string> variables;
  /// "host:port" of the Runtime API inside the sandbox.
  std::string runtime_api = "127.0.0.1:9001";
};

/// The complete environment ("KEY=VALUE") of a runtime process: the reserved
/// variables Lambda defines, the unreserved defaults, then the function's own.
std::vector<std::string> runtime_environment(const runtime_info& runtime,
                                             const function_environment& fn);

} // namespace nimbus::vmm
