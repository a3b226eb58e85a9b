# Helpers that keep every library and test binary declared the same way:
# explicit source lists, public headers under <folder>/include/nimbus/<folder>/.

# nimbus_add_library(<folder> SOURCES ... [PUBLIC_DEPS ...] [PRIVATE_DEPS ...])
# Creates the static library nimbus_<folder> with the alias nimbus::<folder>.
function(nimbus_add_library folder)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(nimbus_${folder} STATIC ${ARG_SOURCES})
  add_library(nimbus::${folder} ALIAS nimbus_${folder})
  target_include_directories(nimbus_${folder} PUBLIC
    ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(nimbus_${folder} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
endfunction()

# nimbus_add_test(<folder> SOURCES ... DEPS ...)
# Creates the doctest binary <folder>_test and registers every test case with
# ctest, so that `ctest -N` lists each case by name.
find_package(doctest REQUIRED)
include(doctest)
function(nimbus_add_test folder)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${folder}_test ${CMAKE_SOURCE_DIR}/tests/main.cpp ${ARG_SOURCES})
  target_link_libraries(${folder}_test PRIVATE ${ARG_DEPS} doctest::doctest)
  target_compile_definitions(${folder}_test PRIVATE
    NIMBUS_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
    NIMBUS_SHARED_DIR="${CMAKE_SOURCE_DIR}/../shared")
  # A bound on every case: a hung case fails instead of holding CI.
  doctest_discover_tests(${folder}_test TEST_PREFIX "${folder}: " PROPERTIES TIMEOUT 600)
endfunction()
