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

std::vector<std::string> runtime_command(const runtime_info& runtime) {
  switch (runtime.family) {
    case runtime_family::provided:
      return {"/var/task/bootstrap"};
    case runtime_family::python:
      return {"/usr/bin/python3", "/var/runtime/python/bootstrap.py"};
    case runtime_family::node:
      return {"/usr/bin/node", "/var/runtime/node/bootstrap.mjs"};
  }
  return {};
}

std::vector<std::string> runtime_environment(const runtime_info& runtime,
                                             const function_environment& fn) {
  std::vector<std::string> env = {
    "_HANDLER=" + fn.handler,
    "AWS_REGION=" + fn.region,
    "AWS_DEFAULT_REGION=" + fn.region,
    "AWS_LAMBDA_FUNCTION_NAME=" + fn.function_name,
    "AWS_LAMBDA_FUNCTION_VERSION=" + fn.version,
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + std::to_string(fn.memory_mb),
    "AWS_LAMBDA_INITIALIZATION_TYPE=on-demand",
    "AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + fn.function_name,
    "AWS_LAMBDA_LOG_STREAM_NAME=" + fn.log_stream,
    "AWS_LAMBDA_RUNTIME_API=" + fn.runtime_api,
    "LAMBDA_TASK_ROOT=/var/task",
    "LAMBDA_RUNTIME_DIR=/var/runtime",
    "TZ=:UTC",
    "LANG=en_US.UTF-8",
    "PATH=/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LD_LIBRARY_PATH=/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:"
    "/opt/lib",
  };
  // AWS sets AWS_EXECUTION_ENV for managed runtimes only.
  if (runtime.family != runtime_family::provided)
    env.push_back("AWS_EXECUTION_ENV=AWS_Lambda_" + runtime.name);
  for (const auto& [k, v] : fn.variables)
    env.push_back(k + "=" + v);
  return env;
}

} // namespace nimbus::vmm
