#include "nimbus/storage/code_store.hpp"
#include "nimbus/storage/file_chunk_store.hpp"

#include "../support/temp_dir.hpp"
#include "../support/zip_builder.hpp"

#include "../support/noise.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <random>

using namespace nimbus::storage;
using nimbus::test::make_zip;
using nimbus::test::temp_dir;
using nimbus::test::zip_entry;

namespace {

constexpr const char* account_a = "111111111111";
constexpr const char* account_b = "222222222222";

using nimbus::test::noise;

size_t stored_chunks(code_store& store) {
  std::vector<chunk_id> ids;
  REQUIRE(store.chunks()->list(ids).empty());
  return ids.size();
}

std::unique_ptr<code_store> open_store(const std::string& dir, const char* domain = "account",
                                       uint64_t zip_limit = 250ull << 20) {
  code_store_options options;
  options.dir = dir;
  options.convergence_domain = domain;
  options.zip_unpacked_bytes = zip_limit;
  std::string error;
  auto store = code_store::open(options, error);
  REQUIRE_MESSAGE(store, error);
  return store;
}

bool have_mkfs() {
  return std::filesystem::exists("/usr/bin/mkfs.erofs");
}

} // namespace

TEST_CASE("code store: a zip becomes an image; the original zip reads back; dedup per account") {
  if (!have_mkfs()) {
    MESSAGE("skipped: mkfs.erofs is missing");
    return;
  }
  temp_dir dir{"nimbus-code-store"};
  auto zip = make_zip({{"app.py", "def handler(e, c):\n    return e\n"},
                       {"data.bin", noise(1, 3 << 20)},
                       {"bootstrap", "#!/bin/sh\n", false, true}});
  stored_zip first;
  {
    auto store = open_store(dir.path());
    REQUIRE(store->store_zip(account_a, zip, first).empty());
    CHECK(first.image == "zip-" + first.sha256_hex);
    CHECK(first.zip_bytes == zip.size());
    CHECK(first.image_bytes > (3u << 20));
    CHECK(first.new_chunks > 0);
    auto after_first = stored_chunks(*store);
    // The same zip again in the same account stores nothing new.
    stored_zip again;
    REQUIRE(store->store_zip(account_a, zip, again).empty());
    CHECK(again.image == first.image);
    CHECK(again.new_chunks == 0);
    CHECK(stored_chunks(*store) == after_first);
    CHECK(store->stats().zips_deduplicated == 1);
    // Another account gets its own chunks (CS-1).
    stored_zip other;
    REQUIRE(store->store_zip(account_b, zip, other).empty());
    CHECK(other.new_chunks == first.new_chunks);
    CHECK(stored_chunks(*store) == 2 * after_first);
    std::string back;
    REQUIRE(store->read_zip(account_a, first.sha256_hex, back).empty());
    CHECK(back == zip);
    // The image holds the files (an erofs superblock at 1024).
    std::string image;
    REQUIRE(store->images().read_image(account_a, first.image, image).empty());
    REQUIRE(image.size() > 1028);
    CHECK(static_cast<unsigned char>(image[1024]) == 0xe2);
    CHECK(image.find("def handler(e, c):") != std::string::npos);
  }
  // After a restart the images are still there; removal frees the chunks.
  auto store = open_store(dir.path());
  std::string back;
  REQUIRE(store->read_zip(account_b, first.sha256_hex, back).empty());
  CHECK(back == zip);
  auto before = stored_chunks(*store);
  REQUIRE(store->remove_zip(account_a, first.sha256_hex).empty());
  CHECK(stored_chunks(*store) == before / 2);
  CHECK_FALSE(store->read_zip(account_a, first.sha256_hex, back).empty());
  REQUIRE(store->remove_zip(account_b, first.sha256_hex).empty());
  CHECK(stored_chunks(*store) == 0);
}

TEST_CASE("code store: a node upgraded in place keeps the images of the legacy chunk layout") {
  temp_dir dir{"nimbus-code-store"};
  auto data = noise(3, (2 << 20) + 100);
  {
    // What an older node left: chunk files under chunks/, manifests under
    // images/, keys under keys/.
    std::string error;
    std::shared_ptr<key_store> keys = key_store::open(dir.path() + "/keys", "", error);
    REQUIRE_MESSAGE(keys, error);
    auto chunks = open_file_chunk_store(dir.path() + "/chunks", error);
    REQUIRE_MESSAGE(chunks, error);
    auto images = image_store::open(dir.path() + "/images", chunks, keys,
                                    convergence_domain::account, error);
    REQUIRE_MESSAGE(images, error);
    image_info info;
    REQUIRE(images->put_bytes(account_a, "legacy", data, info).empty());
    REQUIRE(info.chunks == 5);
  }
  auto store = open_store(dir.path());
  std::string back;
  REQUIRE(store->images().read_image(account_a, "legacy", back).empty());
  CHECK(back == data);
  CHECK(stored_chunks(*store) == 5);
  for (auto& e : std::filesystem::recursive_directory_iterator(dir.path() + "/chunks"))
    CHECK(e.path().filename().string().size() != 64);
  // Garbage collection sees them as the pack store's.
  REQUIRE(store->images().remove(account_a, "legacy").empty());
  uint64_t removed = 0;
  REQUIRE(store->images().collect_garbage(removed).empty());
  CHECK(removed == 5);
}

TEST_CASE("code store: the global domain shares chunks across accounts") {
  if (!have_mkfs()) {
    MESSAGE("skipped: mkfs.erofs is missing");
    return;
  }
  temp_dir dir{"nimbus-code-store"};
  auto store = open_store(dir.path(), "global");
  auto zip = make_zip({{"data.bin", noise(2, 2 << 20)}});
  stored_zip a, b;
  REQUIRE(store->store_zip(account_a, zip, a).empty());
  auto after_first = stored_chunks(*store);
  REQUIRE(store->store_zip(account_b, zip, b).empty());
  CHECK(b.new_chunks == 0);
  CHECK(stored_chunks(*store) == after_first);
}

TEST_CASE("code store: bad zips and zips that unpack past the limit are refused as invalid") {
  if (!have_mkfs()) {
    MESSAGE("skipped: mkfs.erofs is missing");
    return;
  }
  temp_dir dir{"nimbus-code-store"};
  auto store = open_store(dir.path(), "account", 1 << 20);
  stored_zip out;
  auto problem = store->store_zip(account_a, "not a zip at all", out);
  CHECK(problem.rfind("invalid: ", 0) == 0);
  // 4 MiB of zeros compress to almost nothing but unpack past 1 MiB.
  auto bomb = make_zip({{"zeros.bin", std::string(4 << 20, '\0')}});
  CHECK(bomb.size() < (64u << 10));
  problem = store->store_zip(account_a, bomb, out);
  CHECK(problem.rfind("invalid: ", 0) == 0);
  CHECK(stored_chunks(*store) == 0);
  // Nothing is left in the work directory.
  CHECK(std::filesystem::is_empty(dir.path() + "/work"));
  pushed_image image;
  CHECK(store->resolve_image(account_a, "demo", "v1", image) == "not found");
  CHECK(store->push_image(account_a, dir.path() + "/missing.tar", "demo", "v1", image)
          .rfind("invalid: ", 0)
        == 0);
}
