#include "nimbus/storage/chunk_cache.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <mutex>
#include <thread>
#include <vector>

using namespace nimbus::storage;

namespace {

namespace fs = std::filesystem;

struct temp_dir {
  std::string path;
  temp_dir() {
    char name[] = "/tmp/nimbus-cache-test-XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    path = name;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

convergence_secret test_secret() {
  convergence_secret s;
  s.fill(7);
  return s;
}

// A memory store that claims to be remote, so the disk tier is used; get()
// can be held at a gate to let several readers pile up on one fetch.
class remote_store final : public chunk_store {
public:
  memory_chunk_store inner;

  std::string put(const chunk_id& id, std::string_view sealed) override {
    return inner.put(id, sealed);
  }
  std::string sync() override {
    return {};
  }
  std::string get(const chunk_id& id, std::string& sealed) override {
    std::unique_lock lock(mutex_);
    ++entered_;
    changed_.notify_all();
    changed_.wait(lock, [&] { return open_; });
    lock.unlock();
    return inner.get(id, sealed);
  }
  bool contains(const chunk_id& id) override {
    return inner.contains(id);
  }
  std::string remove(const chunk_id& id) override {
    return inner.remove(id);
  }
  std::string list(std::vector<chunk_id>& ids) override {
    return inner.list(ids);
  }
  bool local() const override {
    return false;
  }

  void close_gate() {
    std::lock_guard lock(mutex_);
    open_ = false;
  }
  void open_gate() {
    std::lock_guard lock(mutex_);
    open_ = true;
    changed_.notify_all();
  }
  bool wait_entered(int count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(30), [&] { return entered_ >= count; });
  }

private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = true;
  int entered_ = 0;
};

// Chunks of distinct content, stored in `store`.
std::vector<sealed_chunk> make_chunks(chunk_store& store, int count, size_t size = 1000) {
  std::vector<sealed_chunk> chunks;
  for (int i = 0; i < count; ++i) {
    std::string plain(size, static_cast<char>('a' + i));
    plain += std::to_string(i);
    chunks.push_back(seal_chunk(test_secret(), plain));
    REQUIRE(store.put(chunks.back().ref.id, chunks.back().bytes).empty());
  }
  return chunks;
}

std::string plain_of(const sealed_chunk& chunk) {
  std::string out;
  REQUIRE(open_chunk(chunk.ref, chunk.bytes, out).empty());
  return out;
}

size_t files_in(const std::string& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

} // namespace

TEST_CASE("chunk_cache: the memory tier serves repeated reads and evicts the least recently used") {
  auto store = std::make_shared<memory_chunk_store>();
  auto chunks = make_chunks(*store, 3);
  auto one_size = chunks[0].ref.size;
  temp_dir dir;
  // Room for two plaintexts.
  chunk_cache cache(store, dir.path + "/disk", 2 * one_size + 10, 1 << 20);
  CHECK_FALSE(cache.disk_enabled()); // the memory store is local
  std::shared_ptr<const std::string> text;
  REQUIRE(cache.read(chunks[0].ref, text).empty());
  REQUIRE(text);
  CHECK(*text == plain_of(chunks[0]));
  REQUIRE(cache.read(chunks[0].ref, text).empty());
  CHECK(*text == plain_of(chunks[0]));
  CHECK(store->reads() == 1);
  CHECK(cache.stats().memory_hits == 1);

  REQUIRE(cache.read(chunks[1].ref, text).empty());
  REQUIRE(cache.read(chunks[0].ref, text).empty()); // 0 is now the most recent
  REQUIRE(cache.read(chunks[2].ref, text).empty()); // evicts 1
  CHECK(store->reads() == 3);
  REQUIRE(cache.read(chunks[0].ref, text).empty());
  REQUIRE(cache.read(chunks[2].ref, text).empty());
  CHECK(store->reads() == 3);
  REQUIRE(cache.read(chunks[1].ref, text).empty());
  CHECK(store->reads() == 4);
  auto stats = cache.stats();
  CHECK(stats.store_reads == 4);
  CHECK(stats.memory_hits == 4);
  CHECK(stats.disk_hits == 0);
  CHECK(stats.fetched_bytes == 4 * (one_size + chunk_overhead));
  // A local store gets no disk copies.
  CHECK_FALSE(fs::exists(dir.path + "/disk"));
}

TEST_CASE("chunk_cache: the disk tier keeps sealed copies within its budget and reuses them") {
  auto store = std::make_shared<remote_store>();
  auto chunks = make_chunks(*store, 4);
  auto sealed_size = chunks[0].bytes.size();
  temp_dir dir;
  auto disk = dir.path + "/disk";
  {
    chunk_cache cache(store, disk, 0, 2 * sealed_size + 5);
    REQUIRE(cache.disk_enabled());
    std::shared_ptr<const std::string> text;
    REQUIRE(cache.read(chunks[0].ref, text).empty());
    REQUIRE(cache.read(chunks[1].ref, text).empty());
    CHECK(files_in(disk) == 2);
    REQUIRE(cache.read(chunks[0].ref, text).empty()); // disk hit, 0 most recent
    CHECK(*text == plain_of(chunks[0]));
    CHECK(cache.stats().disk_hits == 1);
    REQUIRE(cache.read(chunks[2].ref, text).empty()); // evicts 1
    CHECK(files_in(disk) == 2);
    CHECK(fs::exists(disk + "/" + chunk_id_hex(chunks[0].ref.id)));
    CHECK(fs::exists(disk + "/" + chunk_id_hex(chunks[2].ref.id)));
    CHECK_FALSE(fs::exists(disk + "/" + chunk_id_hex(chunks[1].ref.id)));
    // The sealed copy on disk does not contain the plaintext.
    std::ifstream in(disk + "/" + chunk_id_hex(chunks[0].ref.id), std::ios::binary);
    std::string on_disk((std::istreambuf_iterator<char>(in)), {});
    CHECK(on_disk == chunks[0].bytes);
    CHECK(store->inner.reads() == 3);
  }
  // A new cache (a restarted worker) reuses the copies, and drops strays.
  { std::ofstream(disk + "/junk.tmp3") << "x"; }
  chunk_cache again(store, disk, 0, 2 * sealed_size + 5);
  CHECK_FALSE(fs::exists(disk + "/junk.tmp3"));
  std::shared_ptr<const std::string> text;
  REQUIRE(again.read(chunks[2].ref, text).empty());
  CHECK(*text == plain_of(chunks[2]));
  CHECK(again.stats().disk_hits == 1);
  CHECK(store->inner.reads() == 3);
}

TEST_CASE("chunk_cache: a corrupt disk copy is dropped and fetched again from the store (CS-2)") {
  auto store = std::make_shared<remote_store>();
  auto chunks = make_chunks(*store, 1, 5000);
  temp_dir dir;
  auto disk = dir.path + "/disk";
  chunk_cache cache(store, disk, 0, 1 << 20);
  std::shared_ptr<const std::string> text;
  REQUIRE(cache.read(chunks[0].ref, text).empty());
  auto file = disk + "/" + chunk_id_hex(chunks[0].ref.id);
  {
    auto bad = chunks[0].bytes;
    bad[100] = static_cast<char>(bad[100] ^ 0x10);
    std::ofstream(file, std::ios::binary | std::ios::trunc) << bad;
  }
  REQUIRE(cache.read(chunks[0].ref, text).empty());
  CHECK(*text == plain_of(chunks[0]));
  CHECK(cache.stats().disk_hits == 0);
  CHECK(store->inner.reads() == 2);
  // The disk copy was rewritten with good bytes and serves the next read.
  REQUIRE(cache.read(chunks[0].ref, text).empty());
  CHECK(cache.stats().disk_hits == 1);
  CHECK(store->inner.reads() == 2);
  // A truncated copy is dropped too.
  fs::resize_file(file, 10);
  REQUIRE(cache.read(chunks[0].ref, text).empty());
  CHECK(*text == plain_of(chunks[0]));
  CHECK(store->inner.reads() == 3);
}

TEST_CASE("chunk_cache: a corrupt or missing chunk in the store is an error, never bytes") {
  auto store = std::make_shared<remote_store>();
  auto chunks = make_chunks(*store, 2);
  temp_dir dir;
  chunk_cache cache(store, dir.path + "/disk", 1 << 20, 1 << 20);
  auto bad = chunks[0].bytes;
  bad[bad.size() - 1] = static_cast<char>(bad[bad.size() - 1] ^ 1);
  store->inner.corrupt(chunks[0].ref.id, bad);
  std::shared_ptr<const std::string> text;
  auto error = cache.read(chunks[0].ref, text);
  CHECK_FALSE(error.empty());
  CHECK_FALSE(text);
  // Nothing was cached: the next read goes to the store again.
  CHECK_FALSE(cache.read(chunks[0].ref, text).empty());
  CHECK(store->inner.reads() == 2);
  CHECK(files_in(dir.path + "/disk") == 0);
  // A missing chunk.
  REQUIRE(store->inner.remove(chunks[1].ref.id).empty());
  error = cache.read(chunks[1].ref, text);
  CHECK(error.find("not found") != std::string::npos);
  CHECK_FALSE(text);
}

TEST_CASE("chunk_cache: a ref with the right id and a wrong key never gets the plaintext") {
  auto store = std::make_shared<memory_chunk_store>();
  auto chunks = make_chunks(*store, 1);
  chunk_cache cache(store, "", 1 << 20, 0);
  std::shared_ptr<const std::string> text;
  REQUIRE(cache.read(chunks[0].ref, text).empty());
  auto forged = chunks[0].ref;
  forged.key[5] ^= 1;
  auto error = cache.read(forged, text);
  CHECK_FALSE(error.empty());
  CHECK_FALSE(text);
}

TEST_CASE("chunk_cache: concurrent reads of one missing chunk fetch it once") {
  auto store = std::make_shared<remote_store>();
  auto chunks = make_chunks(*store, 1, 100000);
  temp_dir dir;
  // No memory tier: the followers can only be served by the leader's fetch.
  chunk_cache cache(store, dir.path + "/disk", 0, 1 << 20);
  store->close_gate();
  constexpr int readers = 6;
  std::vector<std::string> errors(readers);
  std::vector<std::shared_ptr<const std::string>> texts(readers);
  std::vector<std::thread> threads;
  threads.emplace_back([&] { errors[0] = cache.read(chunks[0].ref, texts[0]); });
  REQUIRE(store->wait_entered(1)); // the leader is inside the store
  for (int i = 1; i < readers; ++i)
    threads.emplace_back([&, i] { errors[i] = cache.read(chunks[0].ref, texts[i]); });
  // Wait (bounded) until every follower has joined the fetch in flight.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (cache.stats().shared_fetches < readers - 1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  store->open_gate();
  for (auto& t : threads)
    t.join();
  CHECK(cache.stats().shared_fetches == readers - 1);
  CHECK(store->inner.reads() == 1);
  auto expected = plain_of(chunks[0]);
  for (int i = 0; i < readers; ++i) {
    CHECK(errors[i].empty());
    REQUIRE(texts[i]);
    CHECK(*texts[i] == expected);
  }
}

TEST_CASE("chunk_cache: many threads reading many chunks get the right bytes") {
  auto store = std::make_shared<remote_store>();
  auto chunks = make_chunks(*store, 16, 3000);
  temp_dir dir;
  auto sealed_size = chunks[0].bytes.size();
  // Budgets smaller than the set, so eviction runs while reads go on.
  chunk_cache cache(store, dir.path + "/disk", 4 * 3010, 6 * sealed_size);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 200; ++round) {
        auto& chunk = chunks[static_cast<size_t>((round * 7 + t * 3) % 16)];
        std::shared_ptr<const std::string> text;
        std::string plain;
        open_chunk(chunk.ref, chunk.bytes, plain);
        if (!cache.read(chunk.ref, text).empty() || !text || *text != plain)
          ++wrong;
      }
    });
  for (auto& t : threads)
    t.join();
  CHECK(wrong == 0);
  CHECK(files_in(dir.path + "/disk") <= 6);
  auto stats = cache.stats();
  CHECK(stats.memory_hits + stats.disk_hits + stats.store_reads + stats.shared_fetches == 800);
}

TEST_CASE("chunk_cache: preload loads a chunk once and never waits for another thread's fetch") {
  auto store = std::make_shared<remote_store>();
  auto chunks = make_chunks(*store, 3, 5000);
  // Memory tier only (no disk directory).
  chunk_cache cache(store, "", 1 << 20, 0);
  CHECK(cache.preload(chunks[0].ref));
  CHECK(store->inner.reads() == 1);
  std::shared_ptr<const std::string> text;
  CHECK(cache.read(chunks[0].ref, text).empty());
  REQUIRE(text);
  CHECK(*text == plain_of(chunks[0]));
  CHECK(cache.stats().memory_hits == 1);
  // In memory already: nothing to do.
  CHECK_FALSE(cache.preload(chunks[0].ref));
  CHECK(store->inner.reads() == 1);

  // A reader is fetching chunk 1: preload returns at once, and the reader's
  // fetch stays the only one.
  store->close_gate();
  std::shared_ptr<const std::string> fetched;
  std::thread reader([&] { cache.read(chunks[1].ref, fetched); });
  REQUIRE(store->wait_entered(2));
  auto preloading = std::async(std::launch::async, [&] { return cache.preload(chunks[1].ref); });
  bool returned = preloading.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  store->open_gate();
  reader.join();
  CHECK(returned);
  CHECK_FALSE(preloading.get());
  REQUIRE(fetched);
  CHECK(*fetched == plain_of(chunks[1]));
  CHECK(store->inner.reads() == 2);
  CHECK(cache.stats().shared_fetches == 0);

  // A chunk the store does not have: preload tried; the reader sees the error.
  auto missing = chunks[2].ref;
  missing.id[0] ^= 1;
  CHECK(cache.preload(missing));
  CHECK_FALSE(cache.read(missing, text).empty());
  CHECK_FALSE(text);

  // Without a memory tier there is nowhere to load into.
  chunk_cache no_memory(store, "", 0, 0);
  CHECK_FALSE(no_memory.preload(chunks[2].ref));
  CHECK(store->inner.reads() == 2);
}
