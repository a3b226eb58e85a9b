#include "nimbus/storage/durable_file.hpp"
#include "nimbus/storage/file_chunk_store.hpp"
#include "nimbus/storage/pack_chunk_store.hpp"

#include "../support/temp_dir.hpp"

#include "../support/child_guard.hpp"
#include "../support/noise.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>

using namespace nimbus::storage;
using nimbus::test::temp_dir;
namespace fs = std::filesystem;

namespace {

using nimbus::test::child_guard;
using nimbus::test::noise;

// A real sealed chunk of `size` plaintext bytes (ids match their bytes, as
// recovery checks).
sealed_chunk make_chunk(uint64_t seed, size_t size) {
  convergence_secret secret;
  secret.fill(7);
  return seal_chunk(secret, noise(seed, size));
}

std::vector<sealed_chunk> make_chunks(uint64_t first_seed, size_t count, size_t size) {
  std::vector<sealed_chunk> out;
  for (size_t i = 0; i < count; ++i)
    out.push_back(make_chunk(first_seed + i, size));
  return out;
}

std::shared_ptr<pack_chunk_store> open_store(const std::string& dir,
                                             pack_store_options options = {}) {
  std::string error;
  auto store = pack_chunk_store::open(dir, options, error);
  REQUIRE_MESSAGE(store, error);
  return store;
}

pack_store_options small_packs(uint64_t bytes) {
  pack_store_options options;
  options.pack_bytes = bytes;
  options.background_compaction = false;
  return options;
}

std::set<chunk_id> listed(chunk_store& store) {
  std::vector<chunk_id> ids;
  REQUIRE(store.list(ids).empty());
  return {ids.begin(), ids.end()};
}

void check_has(chunk_store& store, const sealed_chunk& c) {
  CHECK(store.contains(c.ref.id));
  std::string bytes, plain;
  auto error = store.get(c.ref.id, bytes);
  REQUIRE_MESSAGE(error.empty(), error);
  CHECK(bytes == c.bytes);
  CHECK(open_chunk(c.ref, bytes, plain).empty());
}

/// Puts every chunk, then makes them durable.
void put_all_synced(chunk_store& store, const std::vector<sealed_chunk>& chunks) {
  for (auto& c : chunks)
    REQUIRE(store.put(c.ref.id, c.bytes).empty());
  REQUIRE(store.sync().empty());
}

void check_lacks(chunk_store& store, const sealed_chunk& c) {
  CHECK(!store.contains(c.ref.id));
  std::string bytes;
  CHECK(store.get(c.ref.id, bytes).find("not found") != std::string::npos);
}

std::vector<std::string> pack_files(const std::string& dir, std::string_view suffix = ".dat") {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir)) {
    auto name = e.path().filename().string();
    if (name.rfind("pack-", 0) == 0 && name.size() > suffix.size()
        && name.substr(name.size() - suffix.size()) == suffix)
      out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Where `bytes` sit in the pack files: the file and the offset.
std::pair<std::string, size_t> find_in_packs(const std::string& dir, const std::string& bytes) {
  for (auto& path : pack_files(dir)) {
    std::string data;
    REQUIRE(read_file(path, data).ok());
    auto at = data.find(bytes);
    if (at != std::string::npos)
      return {path, at};
  }
  FAIL("bytes not found in any pack");
  return {};
}

void write_at(const std::string& path, size_t offset, std::string_view data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  CHECK(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset))
        == static_cast<ssize_t>(data.size()));
  ::close(fd);
}

// Returns whether the writes went through O_DIRECT.
bool exercise(const std::string& dir, pack_store_options options) {
  auto store = open_store(dir, options);
  CHECK(store->local());
  std::vector<sealed_chunk> sealed;
  for (size_t size : {size_t{0}, size_t{1}, size_t{4076}, size_t{4077}, chunk_size - 1, chunk_size})
    sealed.push_back(make_chunk(size, size));
  for (auto& s : sealed) {
    REQUIRE(store->put(s.ref.id, s.bytes).empty());
    auto bytes = store->statistics().pack_bytes;
    REQUIRE(store->put(s.ref.id, s.bytes).empty()); // a no-op
    CHECK(store->statistics().pack_bytes == bytes);
  }
  // Readable before sync() too.
  for (auto& s : sealed)
    check_has(*store, s);
  REQUIRE(store->sync().empty());
  REQUIRE(store->sync().empty());
  for (auto& s : sealed)
    check_has(*store, s);
  CHECK(listed(*store).size() == sealed.size());
  auto stats = store->statistics();
  CHECK(stats.chunks == sealed.size());
  CHECK(stats.packs == 1);
  CHECK(stats.live_bytes == stats.pack_bytes);
  REQUIRE(store->remove(sealed[0].ref.id).empty());
  REQUIRE(store->remove(sealed[0].ref.id).empty()); // missing is fine
  check_lacks(*store, sealed[0]);
  CHECK(listed(*store).size() == sealed.size() - 1);
  // More than a sealed chunk is refused.
  chunk_id big{};
  big[0] = 1;
  CHECK(store->put(big, std::string(chunk_size + chunk_overhead + 1, 'x')).find("larger")
        != std::string::npos);
  CHECK(!store->contains(big));
  return store->statistics().direct_io;
}

} // namespace

TEST_CASE("pack chunk store: put, get, contains, list and remove (O_DIRECT where possible)") {
  temp_dir dir("nimbus-pack");
  // Where O_DIRECT is refused (tmpfs before Linux 6.6) the same runs buffered.
  std::string mode = exercise(dir.path(), {}) ? "O_DIRECT" : "buffered: O_DIRECT refused";
  MESSAGE(dir.path() << ": " << mode);
}

TEST_CASE("pack chunk store: the same with buffered writes") {
  temp_dir dir("nimbus-pack");
  pack_store_options options;
  options.direct_io = false;
  CHECK(!exercise(dir.path(), options));
}

TEST_CASE("pack chunk store: the same on tmpfs") {
  if (!fs::is_directory("/dev/shm")) {
    MESSAGE("skipped: no /dev/shm");
    return;
  }
  char tmpl[] = "/dev/shm/nimbus-pack-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  struct cleanup {
    fs::path p;
    ~cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } guard{tmpl};
  std::string mode = exercise(tmpl, {}) ? "accepted" : "refused: buffered writes";
  MESSAGE("tmpfs: O_DIRECT " << mode);
}

TEST_CASE("pack chunk store: a second open of the same directory is refused") {
  temp_dir dir("nimbus-pack");
  auto store = open_store(dir.path());
  std::string error;
  CHECK(!pack_chunk_store::open(dir.path(), {}, error));
  CHECK(error.find("open in another process") != std::string::npos);
}

TEST_CASE("pack chunk store: a reopen keeps synced chunks and removals, with or without the idx") {
  temp_dir dir("nimbus-pack");
  auto chunks = make_chunks(100, 6, 70000);
  {
    auto store = open_store(dir.path(), small_packs(300000));
    put_all_synced(*store, chunks);
    REQUIRE(store->remove(chunks[1].ref.id).empty());
    REQUIRE(store->remove(chunks[4].ref.id).empty());
    CHECK(store->statistics().packs >= 2);
  }
  auto check = [&](chunk_store& store) {
    for (size_t i = 0; i < chunks.size(); ++i) {
      if (i == 1 || i == 4)
        check_lacks(store, chunks[i]);
      else
        check_has(store, chunks[i]);
    }
    CHECK(listed(store).size() == 4);
  };
  {
    auto store = open_store(dir.path(), small_packs(300000));
    check(*store);
    CHECK(store->statistics().damaged_bytes == 0);
  }
  // Without the idx files everything comes from a scan; with garbage in
  // them, from the good entries and a scan of the rest.
  for (auto& idx : pack_files(dir.path(), ".idx"))
    fs::remove(idx);
  {
    auto store = open_store(dir.path(), small_packs(300000));
    check(*store);
    CHECK(!pack_files(dir.path(), ".idx").empty()); // rewritten
  }
  auto idx = pack_files(dir.path(), ".idx").front();
  write_at(idx, 64 + 10, "garbage");
  {
    auto store = open_store(dir.path(), small_packs(300000));
    check(*store);
    CHECK(store->statistics().damaged_bytes == 0);
  }
  // A chunk removed and then put again is there after a reopen.
  {
    auto store = open_store(dir.path(), small_packs(300000));
    REQUIRE(store->put(chunks[1].ref.id, chunks[1].bytes).empty());
    REQUIRE(store->sync().empty());
  }
  auto store = open_store(dir.path(), small_packs(300000));
  check_has(*store, chunks[1]);
  check_lacks(*store, chunks[4]);
}

TEST_CASE("pack chunk store: a temporary index file left by a crash is removed at open") {
  // An index rewrite goes through a temporary file and a rename; a process
  // killed between the two leaves the temporary file (seen in CS-3).
  temp_dir dir("nimbus-pack");
  auto chunks = make_chunks(200, 2, 70000);
  {
    auto store = open_store(dir.path());
    put_all_synced(*store, chunks);
  }
  auto idx = pack_files(dir.path(), ".idx");
  REQUIRE(!idx.empty());
  auto leftover = idx.front() + ".0a1b2c3d4e5f" + std::string{temp_suffix};
  fs::copy_file(idx.front(), leftover);
  {
    auto store = open_store(dir.path());
    CHECK_FALSE(fs::exists(leftover));
    for (auto& c : chunks)
      check_has(*store, c);
  }
  // Nothing else in the directory was touched.
  CHECK(fs::exists(idx.front()));
}

TEST_CASE("pack chunk store: a torn tail or garbage after the last record is cut at open") {
  temp_dir dir("nimbus-pack");
  auto chunks = make_chunks(200, 4, 100000);
  {
    auto store = open_store(dir.path());
    for (size_t i = 0; i < 3; ++i)
      REQUIRE(store->put(chunks[i].ref.id, chunks[i].bytes).empty());
    REQUIRE(store->sync().empty());
    // Put but never synced: in the page cache only, like a killed process's.
    REQUIRE(store->put(chunks[3].ref.id, chunks[3].bytes).empty());
  }
  auto pack = pack_files(dir.path()).front();
  auto [path, at] = find_in_packs(dir.path(), chunks[3].bytes);
  // The last record torn in the middle of its payload.
  fs::resize_file(pack, at + 5000);
  {
    auto store = open_store(dir.path());
    for (size_t i = 0; i < 3; ++i)
      check_has(*store, chunks[i]);
    check_lacks(*store, chunks[3]);
    CHECK(store->statistics().damaged_bytes > 0);
    CHECK(fs::file_size(pack) == store->statistics().pack_bytes);
    // Appends go on after the cut.
    REQUIRE(store->put(chunks[3].ref.id, chunks[3].bytes).empty());
    REQUIRE(store->sync().empty());
  }
  // Garbage after the last record, and a header whose record would end
  // past the end of the file.
  auto good_size = fs::file_size(pack);
  {
    std::string header;
    REQUIRE(read_file(pack, header).ok());
    header = header.substr(0, pack_record_header_bytes);
    write_at(pack, good_size, noise(5, 10000));
    write_at(pack, good_size + 3 * pack_record_align, header);
  }
  {
    auto store = open_store(dir.path());
    for (auto& c : chunks)
      check_has(*store, c);
    CHECK(fs::file_size(pack) == good_size);
    CHECK(store->statistics().damaged_bytes >= 10000);
  }
  // A header cut short.
  write_at(pack, good_size, "NPK1");
  auto store = open_store(dir.path());
  for (auto& c : chunks)
    check_has(*store, c);
  CHECK(fs::file_size(pack) == good_size);
}

TEST_CASE("pack chunk store: a corrupt record fails the tag check, or is skipped by a scan") {
  temp_dir dir("nimbus-pack");
  auto chunks = make_chunks(300, 3, 50000);
  {
    auto store = open_store(dir.path());
    put_all_synced(*store, chunks);
  }
  auto [pack, at] = find_in_packs(dir.path(), chunks[1].bytes);
  std::string flipped(1, static_cast<char>(chunks[1].bytes[1000] ^ 0x10));
  write_at(pack, at + 1000, flipped);
  {
    // The idx covers the record, so open() does not read it: get() returns
    // the changed bytes and the GCM tag check (open_chunk) refuses them.
    auto store = open_store(dir.path());
    std::string bytes, plain;
    REQUIRE(store->get(chunks[1].ref.id, bytes).empty());
    CHECK(bytes != chunks[1].bytes);
    CHECK(open_chunk(chunks[1].ref, bytes, plain).find("authentication failed")
          != std::string::npos);
    check_has(*store, chunks[0]);
    check_has(*store, chunks[2]);
  }
  // A scan (no idx) checks every record against its id: the damaged one is
  // skipped, the ones after it stay.
  for (auto& idx : pack_files(dir.path(), ".idx"))
    fs::remove(idx);
  {
    auto store = open_store(dir.path());
    check_lacks(*store, chunks[1]);
    check_has(*store, chunks[0]);
    check_has(*store, chunks[2]);
    CHECK(store->statistics().damaged_bytes > 0);
  }
  // A damaged header: get() refuses to return another record's bytes.
  {
    auto store = open_store(dir.path());
    auto [path, offset] = find_in_packs(dir.path(), chunks[2].bytes);
    write_at(path, offset - pack_record_header_bytes + 20, "XX");
    std::string bytes;
    CHECK(store->get(chunks[2].ref.id, bytes).find("bad record") != std::string::npos);
  }
}

TEST_CASE("pack chunk store: full packs roll over to new ones") {
  temp_dir dir("nimbus-pack");
  auto chunks = make_chunks(400, 7, 300000);
  {
    auto store = open_store(dir.path(), small_packs(1 << 20));
    put_all_synced(*store, chunks);
    auto stats = store->statistics();
    // Three records of 300 KiB fit in a MiB.
    CHECK(stats.packs == 3);
    CHECK(pack_files(dir.path()).size() == 3);
    for (auto& c : chunks)
      check_has(*store, c);
  }
  // A pack bound smaller than one record: a pack per record.
  auto store = open_store(dir.path(), small_packs(1000));
  for (auto& c : chunks)
    check_has(*store, c);
  auto more = make_chunks(500, 2, 10);
  for (auto& c : more)
    REQUIRE(store->put(c.ref.id, c.bytes).empty());
  REQUIRE(store->sync().empty());
  CHECK(store->statistics().packs == 5);
}

TEST_CASE("pack chunk store: compaction keeps every live chunk, frees space and keeps removals") {
  temp_dir dir("nimbus-pack");
  // Records of 100 KiB: ten to a 1 MiB pack.
  auto options = small_packs(1 << 20);
  auto a = make_chunks(1000, 10, 100000);
  auto b = make_chunks(2000, 10, 100000);
  auto c = make_chunks(3000, 10, 100000);
  {
    auto store = open_store(dir.path(), options);
    for (auto* group : {&a, &b})
      for (auto& x : *group)
        REQUIRE(store->put(x.ref.id, x.bytes).empty());
    REQUIRE(store->put(c[0].ref.id, c[0].bytes).empty());
    REQUIRE(store->sync().empty());
    REQUIRE(store->statistics().packs == 3);
    // a[0]'s tombstone goes to pack 3; pack 1 stays (9 of 10 live).
    REQUIRE(store->remove(a[0].ref.id).empty());
    REQUIRE(store->compact().empty());
    CHECK(store->statistics().compactions == 0);
    // Pack 2 empties: compacted away.
    for (auto& x : b)
      REQUIRE(store->remove(x.ref.id).empty());
    auto before = store->statistics();
    REQUIRE(store->compact().empty());
    auto after = store->statistics();
    CHECK(after.compactions == 1);
    CHECK(after.packs == 2);
    CHECK(after.pack_bytes < before.pack_bytes);
    CHECK(pack_files(dir.path()).size() == 2);
    // Fill pack 3 and close it, then empty it: its compaction must keep
    // a[0]'s tombstone (a dead copy of a[0] is still in pack 1) and may
    // drop b's (their chunks are gone with pack 2).
    for (size_t i = 1; i < c.size(); ++i)
      REQUIRE(store->put(c[i].ref.id, c[i].bytes).empty());
    REQUIRE(store->sync().empty());
    REQUIRE(store->statistics().packs >= 3);
    for (size_t i = 0; i + 1 < c.size(); ++i)
      REQUIRE(store->remove(c[i].ref.id).empty());
    REQUIRE(store->compact().empty());
    CHECK(store->statistics().compactions >= 2);
    check_lacks(*store, a[0]);
    for (size_t i = 1; i < a.size(); ++i)
      check_has(*store, a[i]);
    check_has(*store, c.back());
  }
  auto check = [&](chunk_store& store) {
    check_lacks(store, a[0]);
    for (size_t i = 1; i < a.size(); ++i)
      check_has(store, a[i]);
    for (auto& x : b)
      check_lacks(store, x);
    for (size_t i = 0; i + 1 < c.size(); ++i)
      check_lacks(store, c[i]);
    check_has(store, c.back());
    CHECK(listed(store).size() == a.size());
  };
  {
    auto store = open_store(dir.path(), options);
    check(*store);
  }
  for (auto& idx : pack_files(dir.path(), ".idx"))
    fs::remove(idx);
  auto store = open_store(dir.path(), options);
  check(*store);
  // Every closed pack is at least half live now.
  REQUIRE(store->compact().empty());
  CHECK(store->statistics().compactions == 0);
}

TEST_CASE("pack chunk store: packs emptied by removals are compacted in the background") {
  temp_dir dir("nimbus-pack");
  pack_store_options options;
  options.pack_bytes = 1 << 20;
  auto chunks = make_chunks(4000, 20, 100000);
  auto store = open_store(dir.path(), options);
  put_all_synced(*store, chunks);
  REQUIRE(store->statistics().packs == 2);
  for (size_t i = 0; i < 12; ++i)
    REQUIRE(store->remove(chunks[i].ref.id).empty());
  // Wide margin: the compactor runs at once, this only bounds a hang.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (store->statistics().compactions < 1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(store->statistics().compactions >= 1);
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i < 12)
      check_lacks(*store, chunks[i]);
    else
      check_has(*store, chunks[i]);
  }
  store.reset();
  store = open_store(dir.path(), options);
  CHECK(listed(*store).size() == 8);
}

TEST_CASE("pack chunk store: chunks of the legacy per-file layout are imported at open") {
  temp_dir dir("nimbus-pack");
  auto chunks = make_chunks(5000, 5, 30000);
  std::string bad_path;
  {
    std::string error;
    auto legacy = open_file_chunk_store(dir.path(), error);
    REQUIRE_MESSAGE(legacy, error);
    for (auto& c : chunks)
      REQUIRE(legacy->put(c.ref.id, c.bytes).empty());
    REQUIRE(legacy->sync().empty());
    // A file whose bytes do not match its name is not imported.
    auto bad = make_chunk(5100, 100);
    auto hex = chunk_id_hex(bad.ref.id);
    bad_path = dir.path() + "/" + hex.substr(0, 2) + "/" + hex;
    fs::create_directories(dir.path() + "/" + hex.substr(0, 2));
    REQUIRE(write_file_atomic(bad_path, "not the sealed bytes").ok());
    // The leftover of an interrupted legacy put goes.
    REQUIRE(write_file_atomic(dir.path() + "/" + hex.substr(0, 2) + "/x" + std::string{temp_suffix},
                              "partial")
                .ok());
  }
  {
    auto store = open_store(dir.path());
    CHECK(store->statistics().imported == chunks.size());
    for (auto& c : chunks)
      check_has(*store, c);
    CHECK(listed(*store).size() == chunks.size());
    for (auto& c : chunks) {
      auto hex = chunk_id_hex(c.ref.id);
      CHECK(!fs::exists(dir.path() + "/" + hex.substr(0, 2) + "/" + hex));
    }
    CHECK(fs::exists(bad_path));
    REQUIRE(store->remove(chunks[0].ref.id).empty());
  }
  auto store = open_store(dir.path());
  CHECK(store->statistics().imported == 0);
  check_lacks(*store, chunks[0]);
  for (size_t i = 1; i < chunks.size(); ++i)
    check_has(*store, chunks[i]);
  size_t subdirs = 0;
  for (auto& e : fs::directory_iterator(dir.path()))
    if (e.is_directory())
      ++subdirs;
  CHECK(subdirs == 1); // only the bad file's
}

TEST_CASE("pack chunk store: threads putting, reading, removing and syncing at once") {
  temp_dir dir("nimbus-pack");
  pack_store_options options;
  options.pack_bytes = 2 << 20;
  auto store = open_store(dir.path(), options);
  constexpr int writers = 4, per_writer = 40;
  // Shared chunks are put by their writer and the one before it (concurrent
  // puts of one id); private ones by their writer only, which removes the
  // odd ones as it goes.
  std::vector<std::vector<sealed_chunk>> shared, own;
  for (int t = 0; t < writers; ++t) {
    auto size = static_cast<size_t>(20000 + 30000 * t);
    shared.push_back(make_chunks(10000 + 1000 * static_cast<uint64_t>(t), per_writer, size));
    own.push_back(make_chunks(50000 + 1000 * static_cast<uint64_t>(t), per_writer, size));
  }
  std::atomic<int> failures{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < writers; ++t)
    threads.emplace_back([&, t] {
      auto& mine = shared[static_cast<size_t>(t)];
      auto& next = shared[static_cast<size_t>((t + 1) % writers)];
      auto& priv = own[static_cast<size_t>(t)];
      std::set<size_t> removed;
      std::mt19937 rng{static_cast<unsigned>(t)};
      auto put = [&](const sealed_chunk& c) {
        if (!store->put(c.ref.id, c.bytes).empty())
          ++failures;
      };
      for (size_t i = 0; i < per_writer; ++i) {
        put(mine[i]);
        put(next[i]);
        put(priv[i]);
        std::string bytes;
        auto& old = mine[rng() % (i + 1)];
        if (!store->get(old.ref.id, bytes).empty() || bytes != old.bytes)
          ++failures;
        auto j = rng() % (i + 1);
        auto e = store->get(priv[j].ref.id, bytes);
        if (removed.count(j) ? e.find("not found") == std::string::npos
                             : !e.empty() || bytes != priv[j].bytes)
          ++failures;
        if (i % 2 == 1 && i >= 2) {
          if (!store->remove(priv[i - 2].ref.id).empty())
            ++failures;
          removed.insert(i - 2);
        }
      }
    });
  std::thread syncer([&] {
    while (!stop)
      if (!store->sync().empty())
        ++failures;
  });
  std::thread compactor([&] {
    while (!stop)
      if (!store->compact().empty())
        ++failures;
  });
  for (auto& t : threads)
    t.join();
  stop = true;
  syncer.join();
  compactor.join();
  CHECK(failures == 0);
  REQUIRE(store->sync().empty());
  auto expect = [&](chunk_store& s) {
    for (int t = 0; t < writers; ++t)
      for (size_t i = 0; i < per_writer; ++i) {
        check_has(s, shared[static_cast<size_t>(t)][i]);
        // The odd private chunks up to per_writer - 3 were removed.
        if (i % 2 == 1 && i + 3 <= per_writer)
          check_lacks(s, own[static_cast<size_t>(t)][i]);
        else
          check_has(s, own[static_cast<size_t>(t)][i]);
      }
  };
  expect(*store);
  store.reset();
  store = open_store(dir.path(), options);
  expect(*store);
}

namespace {

// The kill test's reports, one atomic pipe write each: a type, a count and
// that many ids.
enum : char {
  report_putting = 'p',
  report_synced = 'S',
  report_removing = 'r',
  report_removed = 'R'
};

void report(int fd, char type, const std::vector<chunk_id>& ids) {
  std::string message{type, static_cast<char>(ids.size())};
  for (auto& id : ids)
    message.append(reinterpret_cast<const char*>(id.data()), id.size());
  if (::write(fd, message.data(), message.size()) != static_cast<ssize_t>(message.size()))
    ::_exit(20);
}

// Small packs, so that rolls and compactions happen; O_DIRECT or buffered
// writes (a kill tears buffered ones more often).
pack_store_options kill_test_options(bool direct) {
  pack_store_options options;
  options.pack_bytes = 1 << 20;
  options.direct_io = direct;
  return options;
}

// Puts batches and syncs, and removes, until killed; says what it does
// through `fd` (see report). Exit codes say what failed.
[[noreturn]] void kill_child(const std::string& dir, uint32_t seed, bool direct, int fd) {
  std::string error;
  auto store = pack_chunk_store::open(dir, kill_test_options(direct), error);
  if (!store) {
    std::fprintf(stderr, "kill child: open: %s\n", error.c_str());
    ::_exit(10);
  }
  std::vector<chunk_id> present;
  if (!store->list(present).empty())
    ::_exit(11);
  std::mt19937 rng{seed};
  uint64_t counter = 0;
  for (;;) {
    if (rng() % 10 < 6 || present.empty()) {
      std::vector<sealed_chunk> batch;
      std::vector<chunk_id> ids;
      for (auto n = 1 + rng() % 5; n > 0; --n) {
        auto size = rng() % 8 == 0 ? chunk_size : rng() % 60000;
        batch.push_back(make_chunk(uint64_t{seed} << 32 | counter++, size));
        ids.push_back(batch.back().ref.id);
      }
      report(fd, report_putting, ids);
      for (auto& c : batch)
        if (auto e = store->put(c.ref.id, c.bytes); !e.empty()) {
          std::fprintf(stderr, "kill child: put: %s\n", e.c_str());
          ::_exit(12);
        }
      if (auto e = store->sync(); !e.empty()) {
        std::fprintf(stderr, "kill child: sync: %s\n", e.c_str());
        ::_exit(13);
      }
      report(fd, report_synced, ids);
      present.insert(present.end(), ids.begin(), ids.end());
    } else {
      auto at = rng() % present.size();
      auto id = present[at];
      report(fd, report_removing, {id});
      if (auto e = store->remove(id); !e.empty()) {
        std::fprintf(stderr, "kill child: remove: %s\n", e.c_str());
        ::_exit(14);
      }
      report(fd, report_removed, {id});
      present.erase(present.begin() + static_cast<long>(at));
    }
  }
}

struct fd_closer {
  int fd = -1;
  ~fd_closer() {
    if (fd >= 0)
      ::close(fd);
  }
};

} // namespace

TEST_CASE("pack chunk store: killed at random moments, synced chunks stay and removed ones go") {
  temp_dir dir("nimbus-pack");
  auto seed = static_cast<uint32_t>(std::random_device{}());
  INFO("seed " << seed);
  std::mt19937 rng{seed};
  enum class state { unknown, present, absent };
  std::map<chunk_id, state> expected;
  uint64_t checked_present = 0, checked_absent = 0, damaged = 0;
  for (uint32_t round = 0; round < 30; ++round) {
    INFO("round " << round);
    std::string reports;
    {
      int fds[2];
      REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
      fd_closer read_end{fds[0]}, write_end{fds[1]};
      child_guard child;
      child.pid = ::fork();
      REQUIRE(child.pid >= 0);
      if (child.pid == 0) {
        ::close(fds[0]);
        kill_child(dir.path(), seed + round, round % 2 == 0, fds[1]);
      }
      ::close(write_end.fd);
      write_end.fd = -1;
      // Read the reports until a random moment, then kill, then read the
      // rest (the pipe ends when the child is gone).
      auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(2 + rng() % 150);
      char buffer[4096];
      bool killed = false;
      for (;;) {
        auto now = std::chrono::steady_clock::now();
        if (!killed && now >= deadline) {
          REQUIRE(::kill(child.pid, SIGKILL) == 0);
          killed = true;
        }
        int wait_ms =
            killed ? -1
                   : static_cast<int>(
                       std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count()
                       + 1);
        pollfd p{read_end.fd, POLLIN, 0};
        if (::poll(&p, 1, wait_ms) < 0 && errno != EINTR)
          FAIL("poll failed");
        if (p.revents == 0)
          continue;
        auto n = ::read(read_end.fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR)
          continue;
        REQUIRE(n >= 0);
        if (n == 0)
          break;
        reports.append(buffer, static_cast<size_t>(n));
      }
      int status = 0;
      REQUIRE(::waitpid(child.pid, &status, 0) == child.pid);
      child.pid = -1;
      CHECK_MESSAGE(!WIFEXITED(status), "child exited with " << WEXITSTATUS(status));
      REQUIRE(WIFSIGNALED(status));
      CHECK(WTERMSIG(status) == SIGKILL);
    }
    // Apply the reports in order.
    size_t at = 0;
    while (at + 2 <= reports.size()) {
      char type = reports[at];
      size_t count = static_cast<uint8_t>(reports[at + 1]);
      REQUIRE(at + 2 + 32 * count <= reports.size());
      for (size_t i = 0; i < count; ++i) {
        chunk_id id;
        std::memcpy(id.data(), reports.data() + at + 2 + 32 * i, 32);
        auto& s = expected[id];
        if (type == report_putting || type == report_removing)
          s = state::unknown;
        else if (type == report_synced)
          s = state::present;
        else if (type == report_removed)
          s = state::absent;
        else
          FAIL("bad report type");
      }
      at += 2 + 32 * count;
    }
    REQUIRE(at == reports.size());

    std::string error;
    auto store = pack_chunk_store::open(dir.path(), kill_test_options(true), error);
    REQUIRE_MESSAGE(store, error);
    damaged += store->statistics().damaged_bytes;
    for (auto& [id, s] : expected) {
      if (s == state::present) {
        std::string bytes;
        auto e = store->get(id, bytes);
        CHECK_MESSAGE(e.empty(), e);
        CHECK(chunk_id_matches(id, bytes));
        ++checked_present;
      } else if (s == state::absent) {
        CHECK_MESSAGE(!store->contains(id), "removed chunk " << chunk_id_hex(id) << " is back");
        ++checked_absent;
      } else {
        // Undecided when killed; durable now either way (open syncs).
        s = store->contains(id) ? state::present : state::absent;
      }
    }
    // Nothing unknown, nothing unreadable.
    for (auto& id : listed(*store)) {
      auto i = expected.find(id);
      CHECK(i != expected.end());
      std::string bytes;
      REQUIRE(store->get(id, bytes).empty());
      CHECK(chunk_id_matches(id, bytes));
    }
  }
  // Compaction deleted packs when the highest pack number is above the
  // number of packs.
  auto packs = pack_files(dir.path());
  REQUIRE(!packs.empty());
  auto highest = std::stoul(fs::path(packs.back()).filename().string().substr(5, 10));
  MESSAGE("kill test: " << checked_present << " synced chunks found, " << checked_absent
                        << " removed chunks absent, " << expected.size() << " chunks in all, "
                        << damaged << " damaged bytes cut or skipped at open, " << packs.size()
                        << " packs left of " << highest << " created");
  CHECK(checked_present > 0);
  CHECK(checked_absent > 0);
}
