#include "nimbus/storage/lazy_image.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

TEST_CASE("lazy_image: a read into the second half of a chunk loads the next one ahead") {
  if (!can_run("lazy_image prefetch"))
    return;
  fixture f;
  test_image img(*f.store, 4 << 20, 2);
  std::string path;
  REQUIRE(f.server->add("ahead", img.data.size(), img.chunks, path).empty());
  fd_guard file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  REQUIRE(file.fd >= 0);
  int err = 0;
  // The last 4 KiB of chunk 1: the reader is about to need chunk 2.
  off_t at = 2 * chunk_size - 4096;
  CHECK(pread_string(file.fd, 4096, at, err) == img.data.substr(at, 4096));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  // Chunks 2 and 3 are loaded ahead (chunk 1 was read: 3 in all).
  while (f.store->reads() < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(f.store->reads() == 3);
  CHECK(f.server->prefetches() >= 2);
  // Chunk 2 now comes from the cache.
  at = 2 * chunk_size + 100;
  CHECK(pread_string(file.fd, 100, at, err) == img.data.substr(at, 100));
  CHECK(f.store->reads() == 3);
  // Nothing far ahead was loaded.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(f.store->reads() == 3);
}
