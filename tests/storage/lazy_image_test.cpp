#include "nimbus/storage/lazy_image.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

using namespace nimbus::storage;

namespace {

namespace fs = std::filesystem;

struct temp_dir {
  std::string path;
  temp_dir() {
    char name[] = "/tmp/nimbus-lazy-test-XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    path = name;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

bool can_run(const char* test) {
  if (::geteuid() != 0) {
    MESSAGE("skipped " << test << ": needs root to mount FUSE");
    return false;
  }
  if (!lazy_image_server::available()) {
    MESSAGE("skipped " << test << ": /dev/fuse is not usable");
    return false;
  }
  return true;
}

bool is_mount_point(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (point == path)
      return true;
  }
  return false;
}

// A test image: `size` bytes of pseudo-random data sealed into a store.
struct test_image {
  std::string data;
  std::vector<chunk_ref> chunks;
  std::vector<sealed_chunk> sealed;

  test_image(memory_chunk_store& store, size_t size, uint32_t seed) {
    std::mt19937 random(seed);
    data.resize(size);
    for (auto& c : data)
      c = static_cast<char>(random());
    convergence_secret secret;
    secret.fill(9);
    for (size_t at = 0; at < size; at += chunk_size) {
      auto piece = std::string_view(data).substr(at, chunk_size);
      sealed.push_back(seal_chunk(secret, piece));
      chunks.push_back(sealed.back().ref);
      REQUIRE(store.put(sealed.back().ref.id, sealed.back().bytes).empty());
    }
  }
};

std::string pread_string(int fd, size_t size, off_t offset, int& err) {
  std::string out(size, '\0');
  err = 0;
  auto n = ::pread(fd, out.data(), size, offset);
  if (n < 0) {
    err = errno;
    return {};
  }
  out.resize(static_cast<size_t>(n));
  return out;
}

struct fixture {
  temp_dir dir;
  std::shared_ptr<memory_chunk_store> store = std::make_shared<memory_chunk_store>();
  std::shared_ptr<chunk_cache> cache =
      std::make_shared<chunk_cache>(store, "", uint64_t{64} << 20, 0);
  std::unique_ptr<lazy_image_server> server;

  fixture() {
    std::string error;
    server = lazy_image_server::start(dir.path + "/mnt", cache, error);
    REQUIRE_MESSAGE(server, error);
  }
};

} // namespace

TEST_CASE("lazy_image: a read fetches only the chunks it overlaps") {
  if (!can_run("lazy_image read"))
    return;
  fixture f;
  test_image img(*f.store, 10 << 20, 1);
  REQUIRE(img.chunks.size() == 20);
  std::string path;
  REQUIRE(f.server->add("ten", img.data.size(), img.chunks, path).empty());
  CHECK(path == f.dir.path + "/mnt/ten");
  CHECK(is_mount_point(f.dir.path + "/mnt"));

  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(st.st_size == 10 << 20);
  CHECK((st.st_mode & 07777) == 0444);
  CHECK(S_ISREG(st.st_mode));
  CHECK(f.store->reads() == 0);

  fd_guard file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  REQUIRE(file.fd >= 0);
  int err = 0;
  // 100 bytes inside chunk 3: one chunk (kernel readahead stays inside it).
  off_t at = 3 * chunk_size + 100;
  CHECK(pread_string(file.fd, 100, at, err) == img.data.substr(at, 100));
  CHECK(f.store->reads() == 1);
  // 200 bytes across the boundary of chunks 7 and 8: two chunks.
  at = 8 * chunk_size - 100;
  CHECK(pread_string(file.fd, 200, at, err) == img.data.substr(at, 200));
  CHECK(f.store->reads() == 3);
  // Reading again comes from the kernel's page cache or the memory tier.
  CHECK(pread_string(file.fd, 200, at, err) == img.data.substr(at, 200));
  CHECK(f.store->reads() == 3);

  // Parallel readers of the whole file see exactly the image.
  std::vector<std::thread> readers;
  std::vector<int> wrong(4, 0);
  for (int t = 0; t < 4; ++t)
    readers.emplace_back([&, t] {
      fd_guard own{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
      for (int k = 0; k < 20; ++k) {
        auto chunk = static_cast<size_t>((k * 3 + t * 5) % 20);
        int e = 0;
        auto got = pread_string(own.fd, chunk_size, static_cast<off_t>(chunk * chunk_size), e);
        if (got != img.data.substr(chunk * chunk_size, chunk_size))
          ++wrong[static_cast<size_t>(t)];
      }
    });
  for (auto& r : readers)
    r.join();
  CHECK(wrong == std::vector<int>(4, 0));
  CHECK(f.store->reads() == 20);
  // A read past the end returns nothing.
  CHECK(pread_string(file.fd, 100, 10 << 20, err).empty());
  CHECK(err == 0);
}

TEST_CASE("lazy_image: a corrupt chunk gives EIO, never wrong bytes") {
  if (!can_run("lazy_image corrupt"))
    return;
  fixture f;
  test_image img(*f.store, 3 * chunk_size + 1000, 2);
  REQUIRE(img.chunks.size() == 4);
  auto bad = img.sealed[1].bytes;
  bad[5000] = static_cast<char>(bad[5000] ^ 0x40);
  f.store->corrupt(img.chunks[1].id, bad);
  std::string path;
  REQUIRE(f.server->add("img", img.data.size(), img.chunks, path).empty());
  fd_guard file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  REQUIRE(file.fd >= 0);
  int err = 0;
  off_t at = chunk_size + 10;
  CHECK(pread_string(file.fd, 100, at, err).empty());
  CHECK(err == EIO);
  // Other chunks still read, including the short last one.
  at = 3 * chunk_size + 900;
  CHECK(pread_string(file.fd, 500, at, err) == img.data.substr(at));
  // Once the store is repaired the same read succeeds (errors are not cached).
  f.store->corrupt(img.chunks[1].id, img.sealed[1].bytes);
  at = chunk_size + 10;
  CHECK(pread_string(file.fd, 100, at, err) == img.data.substr(at, 100));
}

TEST_CASE("lazy_image: add checks its input, remove hides the name, readdir lists files") {
  if (!can_run("lazy_image add/remove"))
    return;
  fixture f;
  test_image one(*f.store, chunk_size + 10, 3);
  test_image two(*f.store, 5000, 4);
  std::string path;
  CHECK_FALSE(f.server->add("a/b", one.data.size(), one.chunks, path).empty());
  CHECK_FALSE(f.server->add("..", one.data.size(), one.chunks, path).empty());
  CHECK_FALSE(f.server->add("x", one.data.size() + 1, one.chunks, path).empty());
  CHECK_FALSE(f.server->add("x", two.data.size(), one.chunks, path).empty());
  REQUIRE(f.server->add("x", one.data.size(), one.chunks, path).empty());
  CHECK_FALSE(f.server->add("x", one.data.size(), one.chunks, path).empty());
  REQUIRE(f.server->add("empty", 0, {}, path).empty());
  std::vector<std::string> names;
  for (auto& entry : fs::directory_iterator(f.dir.path + "/mnt"))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"empty", "x"});
  CHECK(fs::file_size(f.dir.path + "/mnt/empty") == 0);

  // Writing is refused.
  CHECK(::open((f.dir.path + "/mnt/x").c_str(), O_WRONLY | O_CLOEXEC) < 0);

  // An open handle keeps working after remove; the name is gone at once.
  fd_guard file{::open((f.dir.path + "/mnt/x").c_str(), O_RDONLY | O_CLOEXEC)};
  REQUIRE(file.fd >= 0);
  f.server->remove("x");
  CHECK_FALSE(fs::exists(f.dir.path + "/mnt/x"));
  int err = 0;
  CHECK(pread_string(file.fd, 20, chunk_size, err) == one.data.substr(chunk_size, 20));
  // The name can be reused for other content (a new inode, no stale pages).
  REQUIRE(f.server->add("x", two.data.size(), two.chunks, path).empty());
  std::ifstream in(path, std::ios::binary);
  std::string back((std::istreambuf_iterator<char>(in)), {});
  CHECK(back == two.data);
}

TEST_CASE("lazy_image: stopping while a user holds a file unmounts without hanging") {
  if (!can_run("lazy_image stop"))
    return;
  temp_dir dir;
  auto store = std::make_shared<memory_chunk_store>();
  auto cache = std::make_shared<chunk_cache>(store, "", 1 << 20, 0);
  test_image img(*store, 2 * chunk_size, 5);
  std::string error;
  auto server = lazy_image_server::start(dir.path + "/mnt", cache, error);
  REQUIRE_MESSAGE(server, error);
  std::string path;
  REQUIRE(server->add("held", img.data.size(), img.chunks, path).empty());
  fd_guard file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  REQUIRE(file.fd >= 0);
  int err = 0;
  CHECK(pread_string(file.fd, 10, 0, err) == img.data.substr(0, 10));
  server.reset();
  CHECK_FALSE(is_mount_point(dir.path + "/mnt"));
  // The held file now fails (the connection is gone) instead of blocking.
  auto got = pread_string(file.fd, 10, chunk_size + 100, err);
  CHECK(got.empty());
  CHECK(err != 0);
  // A new server mounts at the same place.
  server = lazy_image_server::start(dir.path + "/mnt", cache, error);
  REQUIRE_MESSAGE(server, error);
  CHECK(is_mount_point(dir.path + "/mnt"));
}

// Reads with O_DIRECT reach the server exactly as asked (no page cache, no
// kernel readahead), split only at the kernel's request size.
struct direct_file {
  fd_guard file;
  void* buffer = nullptr;
  size_t capacity = 0;

  direct_file(const std::string& path, size_t max_read)
      : file{::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC)}, capacity(max_read) {
    REQUIRE(file.fd >= 0);
    REQUIRE(::posix_memalign(&buffer, 4096, capacity) == 0);
  }
  ~direct_file() {
    std::free(buffer);
  }
  std::string read(size_t size, uint64_t offset, int& err) {
    REQUIRE(size <= capacity);
    err = 0;
    auto n = ::pread(file.fd, buffer, size, static_cast<off_t>(offset));
    if (n < 0) {
      err = errno;
      return {};
    }
    return std::string(static_cast<char*>(buffer), static_cast<size_t>(n));
  }
};

// Waits (bounded) until the store has served `count` reads.
bool wait_store_reads(const memory_chunk_store& store, uint64_t count) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (store.reads() < count && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return store.reads() >= count;
}

TEST_CASE("lazy_image: reads of any size at any offset around chunk boundaries return the image") {
  if (!can_run("lazy_image boundaries"))
    return;
  fixture f;
  // A short last chunk, so that reads run into the end of the image too.
  test_image img(*f.store, 3 * chunk_size + 12345, 6);
  std::string path;
  REQUIRE(f.server->add("edges", img.data.size(), img.chunks, path).empty());
  const uint64_t size = img.data.size();
  const uint64_t c = chunk_size;
  std::vector<uint64_t> offsets = {0,        1,           4095,  4096,          c - 1,
                                   c - 4096, c,           c + 1, 2 * c - 65536, 3 * c - 1,
                                   size - 1, size - 5000, size,  size + 100};
  std::vector<size_t> sizes = {
      1,          4096,           65536 + 3,          131072, chunk_size - 1,
      chunk_size, chunk_size + 1, 2 * chunk_size + 7, 3 << 20};
  direct_file direct(path, 3 << 20);
  fd_guard buffered{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  REQUIRE(buffered.fd >= 0);
  int wrong = 0;
  for (auto at : offsets)
    for (auto n : sizes) {
      auto want = at >= size ? std::string{} : img.data.substr(at, n);
      int err = 0;
      auto got = direct.read(n, at, err);
      if (err != 0 || got != want) {
        ++wrong;
        MESSAGE("direct read of " << n << " at " << at << ": error " << err << ", " << got.size()
                                  << " bytes");
      }
      got = pread_string(buffered.fd, n, static_cast<off_t>(at), err);
      if (err != 0 || got != want) {
        ++wrong;
        MESSAGE("buffered read of " << n << " at " << at << ": error " << err << ", " << got.size()
                                    << " bytes");
      }
    }
  CHECK(wrong == 0);
  // Every chunk was fetched once; nothing past the image's end was asked for.
  CHECK(f.store->reads() == img.chunks.size());
  CHECK(f.cache->stats().store_reads == img.chunks.size());
}

TEST_CASE(
    "lazy_image: a sequential reader gets chunks loaded ahead, a single small read does not") {
  if (!can_run("lazy_image read-ahead"))
    return;
  fixture f;
  test_image img(*f.store, 12 * chunk_size, 7);
  std::string path;
  REQUIRE(f.server->add("ahead", img.data.size(), img.chunks, path).empty());
  direct_file file(path, 128 << 10);
  int err = 0;
  // A small read, even at the very end of a chunk, is no stream.
  uint64_t at = 2 * chunk_size - 4096;
  CHECK(file.read(4096, at, err) == img.data.substr(at, 4096));
  CHECK(f.store->reads() == 1);
  CHECK(f.server->prefetches() == 0);
  // The first large read of a stream loads nothing ahead either (a page
  // fault's read-around in a big binary looks like this).
  at = 4 * chunk_size;
  CHECK(file.read(128 << 10, at, err) == img.data.substr(at, 128 << 10));
  CHECK(f.store->reads() == 2);
  CHECK(f.server->prefetches() == 0);
  // The second continues it: 2 chunks ahead of the one it read.
  at += 128 << 10;
  CHECK(file.read(128 << 10, at, err) == img.data.substr(at, 128 << 10));
  CHECK(f.server->prefetches() == 2);
  REQUIRE(wait_store_reads(*f.store, 4)); // chunks 5 and 6
  // Once the stream has read 1 MiB (up to the start of chunk 6), 4 ahead of
  // the chunk it is in: chunks 6 to 9.
  while (at + (128 << 10) < 6 * chunk_size) {
    at += 128 << 10;
    CHECK(file.read(128 << 10, at, err) == img.data.substr(at, 128 << 10));
  }
  REQUIRE(wait_store_reads(*f.store, 7)); // chunks 7, 8 and 9
  // Nothing beyond chunk 9 was loaded; reading on finds chunk 6 in memory
  // and moves the read-ahead on by one chunk (10).
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(f.store->reads() == 7);
  auto hits = f.cache->stats().memory_hits;
  at = 6 * chunk_size;
  CHECK(file.read(128 << 10, at, err) == img.data.substr(at, 128 << 10));
  CHECK(f.cache->stats().memory_hits == hits + 1);
  REQUIRE(wait_store_reads(*f.store, 8));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(f.cache->stats().store_reads == 8);
}

TEST_CASE("lazy_image: read-ahead stops at the end of the image") {
  if (!can_run("lazy_image read-ahead end"))
    return;
  fixture f;
  test_image img(*f.store, 3 * chunk_size + 1000, 8);
  std::string path;
  REQUIRE(f.server->add("end", img.data.size(), img.chunks, path).empty());
  direct_file file(path, 128 << 10);
  int err = 0;
  std::string back;
  for (uint64_t at = 2 * chunk_size; at < img.data.size(); at += 128 << 10)
    back += file.read(128 << 10, at, err);
  CHECK(err == 0);
  CHECK(back == img.data.substr(2 * chunk_size));
  // Chunks 2 and 3 only: the stream's read-ahead never named a chunk past
  // the last (an index past it would show as a failed store read).
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(f.store->reads() == 2);
  CHECK(f.cache->stats().store_reads == 2);
}

TEST_CASE("lazy_image: first reads are recorded in order and preload loads chunks ahead") {
  if (!can_run("lazy_image first reads"))
    return;
  fixture f;
  test_image img(*f.store, 40 * chunk_size, 9);
  std::string path;
  REQUIRE(f.server->add("profiled", img.data.size(), img.chunks, path).empty());
  CHECK(f.server->first_reads("profiled").empty());
  CHECK(f.server->first_reads("unknown").empty());
  direct_file file(path, 4096);
  int err = 0;
  for (uint64_t chunk : {3, 1, 3, 2})
    CHECK(file.read(4096, chunk * chunk_size, err) == img.data.substr(chunk * chunk_size, 4096));
  CHECK(f.server->first_reads("profiled") == std::vector<uint32_t>{3, 1, 2});

  // Preload queues chunks for the read-ahead threads; indexes past the end
  // and unknown names are ignored.
  f.server->preload("profiled", {5, 4, 99});
  f.server->preload("unknown", {6});
  REQUIRE(wait_store_reads(*f.store, 5));
  CHECK(file.read(4096, 5 * chunk_size, err) == img.data.substr(5 * chunk_size, 4096));
  CHECK(file.read(4096, 4 * chunk_size, err) == img.data.substr(4 * chunk_size, 4096));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(f.store->reads() == 5);
  // Preloaded chunks count as first reads once read.
  CHECK(f.server->first_reads("profiled") == std::vector<uint32_t>{3, 1, 2, 5, 4});

  // At most first_reads_max chunks are recorded.
  for (uint64_t chunk = 0; chunk < 40; ++chunk)
    file.read(1, chunk * chunk_size, err);
  auto reads = f.server->first_reads("profiled");
  CHECK(reads.size() == lazy_image_server::first_reads_max);
  CHECK(std::vector<uint32_t>(reads.begin(), reads.begin() + 6)
        == std::vector<uint32_t>{3, 1, 2, 5, 4, 0});
}
