#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/function_store.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace nimbus::storage;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    char tmpl[] = "/tmp/nimbus-store-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_dir() {
    fs::remove_all(path);
  }
};

function_record record(std::string name, std::string code) {
  function_record r;
  r.account_id = "123456789012";
  r.name = std::move(name);
  r.runtime = "python3.11";
  r.role = "arn:aws:iam::123456789012:role/r";
  r.handler = "a.b";
  r.code_sha256_hex = to_hex(sha256(code));
  r.code_sha256 = base64_encode(as_bytes(sha256(code)));
  r.code_size = static_cast<int64_t>(code.size());
  r.revision_id = random_uuid();
  r.last_modified = format_last_modified(0);
  return r;
}

} // namespace

TEST_CASE("file function store: records and code survive a reopen") {
  temp_dir dir;
  {
    auto store = make_file_function_store(dir.path.string());
    std::vector<function_record> loaded;
    REQUIRE(store->load(loaded).ok());
    CHECK(loaded.empty());
    auto r = record("f1", "zipbytes");
    REQUIRE(store->put_code(r.code_sha256_hex, "zipbytes").ok());
    REQUIRE(store->put_function(r).ok());
  }
  auto store = make_file_function_store(dir.path.string());
  std::vector<function_record> loaded;
  REQUIRE(store->load(loaded).ok());
  REQUIRE(loaded.size() == 1);
  CHECK(loaded[0].name == "f1");
  std::string code;
  REQUIRE(store->get_code(loaded[0].code_sha256_hex, code).ok());
  CHECK(code == "zipbytes");
  REQUIRE(store->remove_function("123456789012", "f1").ok());
  REQUIRE(store->remove_code(loaded[0].code_sha256_hex).ok());
  REQUIRE(store->load(loaded).ok());
  CHECK(loaded.empty());
  CHECK(fs::is_empty(dir.path / "code"));
}

TEST_CASE("file function store: startup removes leftovers of interrupted writes") {
  temp_dir dir;
  auto store = make_file_function_store(dir.path.string());
  std::vector<function_record> loaded;
  REQUIRE(store->load(loaded).ok());
  auto r = record("kept", "kept-code");
  REQUIRE(store->put_code(r.code_sha256_hex, "kept-code").ok());
  REQUIRE(store->put_function(r).ok());
  // A create that crashed after writing code but before its record, and a
  // half-written temporary file.
  auto orphan = to_hex(sha256("orphan"));
  REQUIRE(store->put_code(orphan, "orphan").ok());
  std::ofstream{dir.path / "functions" / "123456789012" / ("x.json" + std::string{temp_suffix})}
    << "{";
  REQUIRE(store->load(loaded).ok());
  REQUIRE(loaded.size() == 1);
  CHECK(loaded[0].name == "kept");
  CHECK_FALSE(fs::exists(dir.path / "code" / (orphan + ".zip")));
  CHECK(fs::exists(dir.path / "code" / (r.code_sha256_hex + ".zip")));
  CHECK(std::distance(fs::directory_iterator(dir.path / "functions" / "123456789012"),
                      fs::directory_iterator{})
        == 1);
}

TEST_CASE("file function store: corruption is reported, not skipped") {
  temp_dir dir;
  auto store = make_file_function_store(dir.path.string());
  std::vector<function_record> loaded;
  REQUIRE(store->load(loaded).ok());
  auto r = record("f", "code");
  REQUIRE(store->put_code(r.code_sha256_hex, "code").ok());
  REQUIRE(store->put_function(r).ok());
  std::ofstream{dir.path / "functions" / "123456789012" / "f.json", std::ios::trunc} << "{\"x\":";
  auto status = store->load(loaded);
  CHECK_FALSE(status.ok());
  CHECK(status.error.find("corrupt function record") != std::string::npos);
}

TEST_CASE("file function store: missing code is reported") {
  temp_dir dir;
  auto store = make_file_function_store(dir.path.string());
  std::vector<function_record> loaded;
  REQUIRE(store->load(loaded).ok());
  REQUIRE(store->put_function(record("f", "never-stored")).ok());
  auto status = store->load(loaded);
  CHECK_FALSE(status.ok());
  CHECK(status.error.find("missing") != std::string::npos);
}
