#include "nimbus/storage/durable_file.hpp"
#include "nimbus/storage/file_chunk_store.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <set>

using namespace nimbus::storage;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  std::string path;
  explicit temp_dir(const std::string& base) {
    auto tmpl = base + "/nimbus-chunks-XXXXXX";
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    fs::remove_all(path);
  }
};

convergence_secret secret_of(uint8_t b) {
  convergence_secret s;
  s.fill(b);
  return s;
}

// Exercises a store in `base`: /var/tmp is a disk (O_DIRECT), /dev/shm is
// tmpfs (no O_DIRECT: the buffered fallback).
void exercise(const std::string& base) {
  temp_dir dir(base);
  std::string error;
  auto store = open_file_chunk_store(dir.path, error);
  REQUIRE_MESSAGE(store, error);
  CHECK(store->local());
  std::vector<sealed_chunk> sealed;
  for (size_t size : {size_t{1}, size_t{4076}, size_t{4077}, chunk_size - 1, chunk_size}) {
    std::string plain(size, 'p');
    plain[0] = static_cast<char>(size);
    sealed.push_back(seal_chunk(secret_of(1), plain));
  }
  for (auto& s : sealed) {
    REQUIRE(store->put(s.ref.id, s.bytes).empty());
    REQUIRE(store->put(s.ref.id, s.bytes).empty()); // a no-op
  }
  REQUIRE(store->sync().empty());
  REQUIRE(store->sync().empty());
  for (auto& s : sealed) {
    std::string bytes, plain;
    REQUIRE(store->get(s.ref.id, bytes).empty());
    CHECK(bytes == s.bytes);
    CHECK(open_chunk(s.ref, bytes, plain).empty());
    CHECK(store->contains(s.ref.id));
    auto hex = chunk_id_hex(s.ref.id);
    struct stat st {};
    REQUIRE(::stat((dir.path + "/" + hex.substr(0, 2) + "/" + hex).c_str(), &st) == 0);
    CHECK(static_cast<size_t>(st.st_size) == s.bytes.size());
  }
  std::vector<chunk_id> ids;
  REQUIRE(store->list(ids).empty());
  CHECK(ids.size() == sealed.size());
  REQUIRE(store->remove(sealed[0].ref.id).empty());
  REQUIRE(store->remove(sealed[0].ref.id).empty()); // missing is fine
  CHECK(!store->contains(sealed[0].ref.id));
  std::string bytes;
  CHECK(store->get(sealed[0].ref.id, bytes).find("not found") != std::string::npos);

  // Leftovers of interrupted puts are removed at open; chunks stay.
  auto hex = chunk_id_hex(sealed[1].ref.id);
  auto leftover = dir.path + "/" + hex.substr(0, 2) + "/" + hex + ".abc" + std::string{temp_suffix};
  REQUIRE(write_file_atomic(leftover, "partial").ok());
  store.reset();
  store = open_file_chunk_store(dir.path, error);
  REQUIRE_MESSAGE(store, error);
  CHECK(!fs::exists(leftover));
  REQUIRE(store->list(ids).empty());
  CHECK(ids.size() == sealed.size() - 1);
  // An oversized file is refused without reading it all.
  REQUIRE(write_file_atomic(dir.path + "/" + hex.substr(0, 2) + "/" + hex,
                            std::string(chunk_size + chunk_overhead + 1, 'x'))
            .ok());
  CHECK(store->get(sealed[1].ref.id, bytes).find("wrong length") != std::string::npos);
}

} // namespace

TEST_CASE("file chunk store: put, get, list, remove and leftovers on disk") {
  exercise("/var/tmp");
}

TEST_CASE("file chunk store: the same on tmpfs (no O_DIRECT)") {
  if (!fs::is_directory("/dev/shm")) {
    MESSAGE("skipped: no /dev/shm");
    return;
  }
  exercise("/dev/shm");
}
