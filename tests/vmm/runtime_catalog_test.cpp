#include "nimbus/vmm/runtime_catalog.hpp"

#include <doctest/doctest.h>

#include <algorithm>

using namespace nimbus::vmm;

TEST_CASE("runtime catalog: known runtimes map to their family") {
  REQUIRE(find_runtime("provided.al2023"));
  CHECK(find_runtime("provided.al2023")->family == runtime_family::provided);
  CHECK(find_runtime("provided")->family == runtime_family::provided);
  CHECK(find_runtime("python3.11")->family == runtime_family::python);
  CHECK(find_runtime("nodejs20.x")->family == runtime_family::node);
  CHECK(find_runtime("nodejs18.x")->family == runtime_family::node);
}

TEST_CASE("runtime catalog: unknown runtimes are absent") {
  CHECK_FALSE(find_runtime("java99"));
  CHECK_FALSE(find_runtime(""));
  CHECK_FALSE(find_runtime("Python3.11"));
  CHECK(supported_runtimes().size() >= 8);
}

TEST_CASE("runtime catalog: commands and the runtime environment") {
  auto python = *find_runtime("python3.11");
  CHECK(runtime_command(python) == std::vector<std::string>{"/usr/bin/python3",
                                                            "/var/runtime/python/bootstrap.py"});
  CHECK(runtime_command(*find_runtime("provided.al2023"))
        == std::vector<std::string>{"/var/task/bootstrap"});
  function_environment fn;
  fn.function_name = "f1";
  fn.handler = "app.handler";
  fn.region = "eu-west-1";
  fn.memory_mb = 256;
  fn.log_stream = "2026/01/01/[$LATEST]abc";
  fn.variables = {{"STAGE", "dev"}};
  auto env = runtime_environment(python, fn);
  auto has = [&](const std::string& kv) {
    return std::find(env.begin(), env.end(), kv) != env.end();
  };
  for (auto kv : {"_HANDLER=app.handler", "AWS_LAMBDA_FUNCTION_NAME=f1",
                  "AWS_LAMBDA_FUNCTION_VERSION=$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256",
                  "AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/f1",
                  "AWS_LAMBDA_LOG_STREAM_NAME=2026/01/01/[$LATEST]abc", "AWS_REGION=eu-west-1",
                  "LAMBDA_TASK_ROOT=/var/task", "AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001",
                  "TZ=:UTC", "LANG=en_US.UTF-8", "STAGE=dev", "AWS_EXECUTION_ENV=AWS_Lambda_python3.11"})
    CHECK_MESSAGE(has(kv), kv);
  auto provided = runtime_environment(*find_runtime("provided"), fn);
  for (const auto& kv : provided)
    CHECK(kv.rfind("AWS_EXECUTION_ENV=", 0) != 0);
}
