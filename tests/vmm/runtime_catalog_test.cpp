#include "nimbus/vmm/runtime_catalog.hpp"

#include <doctest/doctest.h>

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
