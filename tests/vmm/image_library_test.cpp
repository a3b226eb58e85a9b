#include "nimbus/vmm/image_library.hpp"

#include <doctest/doctest.h>

#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

using namespace nimbus;

namespace {

namespace fs = std::filesystem;

// Mount points at or below `prefix` (no escapes: our temp paths are plain).
std::vector<std::string> mounts_under(const std::string& prefix) {
  std::vector<std::string> found;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (point == prefix || point.rfind(prefix + "/", 0) == 0)
      found.push_back(point);
  }
  return found;
}

// A temporary directory; whatever is still mounted inside it (only ever our
// own mounts) is detached before it is removed.
struct temp_dir {
  std::string path;
  temp_dir() {
    char name[] = "/tmp/nimbus-library-test-XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    path = name;
  }
  ~temp_dir() {
    for (int round = 0; round < 8 && !mounts_under(path).empty(); ++round) {
      auto points = mounts_under(path);
      for (auto it = points.rbegin(); it != points.rend(); ++it)
        ::umount2(it->c_str(), MNT_DETACH);
    }
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
}

bool can_mount(const char* test) {
  if (::geteuid() != 0) {
    MESSAGE("skipped " << test << ": needs root to mount");
    return false;
  }
  if (std::system("command -v mkfs.erofs >/dev/null 2>&1") != 0) {
    MESSAGE("skipped " << test << ": mkfs.erofs (erofs-utils) is not installed");
    return false;
  }
  return true;
}

// A chunk store in front of another that counts the gets of each chunk.
class counting_store final : public storage::chunk_store {
public:
  explicit counting_store(std::shared_ptr<storage::chunk_store> inner) : inner_(std::move(inner)) {}
  std::string put(const storage::chunk_id& id, std::string_view sealed) override {
    return inner_->put(id, sealed);
  }
  std::string sync() override {
    return inner_->sync();
  }
  std::string get(const storage::chunk_id& id, std::string& sealed) override {
    {
      std::lock_guard lock(mutex_);
      ++gets_[id];
    }
    return inner_->get(id, sealed);
  }
  bool contains(const storage::chunk_id& id) override {
    return inner_->contains(id);
  }
  std::string remove(const storage::chunk_id& id) override {
    return inner_->remove(id);
  }
  std::string list(std::vector<storage::chunk_id>& ids) override {
    return inner_->list(ids);
  }
  bool local() const override {
    return true;
  }
  int gets(const storage::chunk_id& id) {
    std::lock_guard lock(mutex_);
    auto it = gets_.find(id);
    return it == gets_.end() ? 0 : it->second;
  }

private:
  std::shared_ptr<storage::chunk_store> inner_;
  std::mutex mutex_;
  std::map<storage::chunk_id, int> gets_;
};

struct stored_image {
  uint64_t size = 0;
  std::vector<storage::chunk_ref> chunks;
};

// Images made with mkfs.erofs and sealed into a memory store, served by a
// resolver that counts its calls.
struct catalog {
  std::shared_ptr<storage::memory_chunk_store> store =
      std::make_shared<storage::memory_chunk_store>();
  std::map<std::string, stored_image> images;
  std::atomic<int> resolves{0};

  void add(const std::string& work, const std::string& key, const std::string& greeting,
           int big_files) {
    auto flat = key;
    std::replace(flat.begin(), flat.end(), '/', '_');
    auto tree = work + "/tree-" + flat;
    fs::create_directories(tree);
    write_file(tree + "/greeting.txt", greeting);
    std::mt19937 random(static_cast<uint32_t>(key.size()));
    for (int i = 0; i < big_files; ++i) {
      std::string data(1 << 20, '\0');
      for (auto& c : data)
        c = static_cast<char>(random());
      write_file(tree + "/big" + std::to_string(i), data);
    }
    auto image = work + "/" + flat + ".erofs";
    auto command = "mkfs.erofs -Enoinline_data --quiet " + image + " " + tree + " >/dev/null 2>&1";
    REQUIRE(std::system(command.c_str()) == 0);
    auto bytes = read_file(image);
    storage::convergence_secret secret;
    secret.fill(11);
    stored_image stored;
    stored.size = bytes.size();
    for (size_t at = 0; at < bytes.size(); at += storage::chunk_size) {
      auto sealed =
          storage::seal_chunk(secret, std::string_view(bytes).substr(at, storage::chunk_size));
      REQUIRE(store->put(sealed.ref.id, sealed.bytes).empty());
      stored.chunks.push_back(sealed.ref);
    }
    images[key] = stored;
  }

  vmm::image_resolver resolver() {
    return [this](const std::string& account, const std::string& name, uint64_t& size,
                  std::vector<storage::chunk_ref>& chunks) -> std::string {
      ++resolves;
      auto it = images.find(account + "/" + name);
      if (it == images.end())
        return "no such image";
      size = it->second.size;
      chunks = it->second.chunks;
      return {};
    };
  }

  std::shared_ptr<storage::chunk_cache> cache(uint64_t memory_bytes = uint64_t{32} << 20) {
    return std::make_shared<storage::chunk_cache>(store, "", memory_bytes, 0);
  }
};

} // namespace

TEST_CASE("image_library: acquire mounts once per image, release unmounts after the last user") {
  if (!can_mount("image_library acquire"))
    return;
  if (!storage::lazy_image_server::available()) {
    MESSAGE("skipped image_library acquire: /dev/fuse is not usable");
    return;
  }
  temp_dir dir;
  catalog images;
  images.add(dir.path, "111/hello", "hello\n", 6);
  images.add(dir.path, "111/other", "other\n", 0);
  std::string error;
  auto library =
      vmm::image_library::open(dir.path + "/lib", images.cache(), images.resolver(), true, error);
  REQUIRE_MESSAGE(library, error);
  CHECK(library->lazy());
  auto total_chunks = images.images["111/hello"].chunks.size();
  REQUIRE(total_chunks >= 12);

  std::string root;
  REQUIRE(library->acquire("111", "hello", root).empty());
  CHECK(root == dir.path + "/lib/mnt/111-hello");
  CHECK(read_file(root + "/greeting.txt") == "hello\n");
  // Lazy: mounting and reading one small file loaded few of the chunks.
  CHECK(images.store->reads() <= 4);
  std::string again;
  REQUIRE(library->acquire("111", "hello", again).empty());
  CHECK(again == root);
  CHECK(images.resolves == 1);
  std::string other;
  REQUIRE(library->acquire("111", "other", other).empty());
  CHECK(read_file(other + "/greeting.txt") == "other\n");
  auto stats = library->stats();
  CHECK(stats.mounted == 2);
  CHECK(stats.lazy_mounts == 2);
  CHECK(stats.materialized == 0);
  CHECK(mounts_under(dir.path + "/lib/mnt").size() == 2);

  library->release("111", "hello");
  CHECK(read_file(root + "/greeting.txt") == "hello\n"); // one user left
  library->release("111", "hello");
  CHECK(mounts_under(root).empty());
  CHECK_FALSE(fs::exists(root));
  CHECK_FALSE(fs::exists(dir.path + "/lib/fuse/111-hello"));
  CHECK(library->stats().mounted == 1);
  library->release("111", "hello"); // not acquired: ignored

  // Unknown images and bad names fail without leaving anything.
  CHECK_FALSE(library->acquire("111", "missing", root).empty());
  CHECK_FALSE(library->acquire("111", "../etc", root).empty());
  CHECK_FALSE(library->acquire("1-1", "hello", root).empty());
  CHECK(mounts_under(dir.path + "/lib/mnt").size() == 1);

  // Acquire again after the unmount mounts again.
  REQUIRE(library->acquire("111", "hello", root).empty());
  CHECK(read_file(root + "/big3") == read_file(dir.path + "/tree-111_hello/big3"));
  library.reset();
  CHECK(mounts_under(dir.path + "/lib").empty());
}

TEST_CASE("image_library: an unused image lingers, is reused, and goes after the linger time") {
  if (!can_mount("image_library linger"))
    return;
  temp_dir dir;
  catalog images;
  images.add(dir.path, "333/a", "a\n", 0);
  images.add(dir.path, "333/b", "b\n", 0);
  images.add(dir.path, "333/c", "c\n", 0);
  std::string error;
  vmm::linger_policy linger;
  // Long enough that no stall of a loaded machine lets an image go between
  // the checks below.
  linger.time = std::chrono::seconds{2};
  linger.max_images = 1;
  auto library = vmm::image_library::open(dir.path + "/lib", images.cache(), images.resolver(),
                                          true, error, linger);
  REQUIRE_MESSAGE(library, error);
  auto wait_for = [&](auto done) {
    for (int i = 0; i < 1500 && !done(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    return done();
  };
  std::string root;
  REQUIRE(library->acquire("333", "a", root).empty());
  library->release("333", "a");
  // Still mounted, and the next acquire uses that mount without resolving.
  CHECK(read_file(root + "/greeting.txt") == "a\n");
  CHECK(library->stats().lingering == 1);
  std::string again;
  REQUIRE(library->acquire("333", "a", again).empty());
  CHECK(again == root);
  CHECK(images.resolves == 1);
  auto stats = library->stats();
  CHECK(stats.reused == 1);
  CHECK(stats.lingering == 0);
  CHECK(stats.mounted == 1);
  // In use, it stays however long it is held.
  std::this_thread::sleep_for(std::chrono::milliseconds{2500});
  CHECK(read_file(root + "/greeting.txt") == "a\n");
  library->release("333", "a");
  // The counters change once the unmount is complete.
  CHECK(wait_for([&] { return library->stats().mounted == 0; }));
  CHECK(mounts_under(root).empty());
  CHECK_FALSE(fs::exists(root));
  CHECK(library->stats().lingering == 0);
  library.reset();
  // Beyond max_images the longest unused goes first, long before its time.
  linger.time = std::chrono::minutes{10};
  library = vmm::image_library::open(dir.path + "/lib", images.cache(), images.resolver(), true,
                                     error, linger);
  REQUIRE_MESSAGE(library, error);
  std::string b, c;
  REQUIRE(library->acquire("333", "b", b).empty());
  REQUIRE(library->acquire("333", "c", c).empty());
  library->release("333", "b");
  library->release("333", "c");
  // The counters change once the unmount is complete.
  CHECK(wait_for([&] { return library->stats().mounted == 1; }));
  CHECK(mounts_under(b).empty());
  CHECK(read_file(c + "/greeting.txt") == "c\n");
  CHECK(library->stats().lingering == 1);
  // Closing the library unmounts what lingers.
  library.reset();
  CHECK(mounts_under(dir.path + "/lib").empty());
}

TEST_CASE("image_library: concurrent first acquires of one image mount it once") {
  if (!can_mount("image_library concurrent"))
    return;
  temp_dir dir;
  catalog images;
  images.add(dir.path, "222/fn", "concurrent\n", 2);
  std::string error;
  auto library =
      vmm::image_library::open(dir.path + "/lib", images.cache(), images.resolver(), true, error);
  REQUIRE_MESSAGE(library, error);
  constexpr int threads = 6;
  std::vector<std::string> roots(threads), errors(threads);
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; ++i)
    workers.emplace_back([&, i] { errors[i] = library->acquire("222", "fn", roots[i]); });
  for (auto& w : workers)
    w.join();
  for (int i = 0; i < threads; ++i) {
    CHECK(errors[i].empty());
    CHECK(roots[i] == roots[0]);
  }
  CHECK(images.resolves == 1);
  CHECK(library->stats().mounted == 1);
  CHECK(mounts_under(roots[0]).size() == 1);
  CHECK(read_file(roots[0] + "/greeting.txt") == "concurrent\n");
  workers.clear();
  for (int i = 0; i < threads; ++i)
    workers.emplace_back([&] { library->release("222", "fn"); });
  for (auto& w : workers)
    w.join();
  CHECK(library->stats().mounted == 0);
  CHECK(mounts_under(dir.path + "/lib/mnt").empty());
}

TEST_CASE("image_library: without FUSE images are materialised and mounted") {
  if (!can_mount("image_library materialised"))
    return;
  temp_dir dir;
  catalog images;
  images.add(dir.path, "333/fn", "materialised\n", 2);
  std::string error;
  // No memory tier: the corrupt chunk below must come from the store.
  auto library =
      vmm::image_library::open(dir.path + "/lib", images.cache(0), images.resolver(), false, error);
  REQUIRE_MESSAGE(library, error);
  CHECK_FALSE(library->lazy());
  std::string root;
  REQUIRE(library->acquire("333", "fn", root).empty());
  CHECK(read_file(root + "/greeting.txt") == "materialised\n");
  CHECK(images.store->reads() == images.images["333/fn"].chunks.size());
  CHECK(fs::exists(dir.path + "/lib/files/333-fn.erofs"));
  auto stats = library->stats();
  CHECK(stats.materialized == 1);
  CHECK(stats.lazy_mounts == 0);
  CHECK(mounts_under(dir.path + "/lib/fuse").empty());
  library->release("333", "fn");
  CHECK_FALSE(fs::exists(dir.path + "/lib/files/333-fn.erofs"));
  CHECK(mounts_under(dir.path + "/lib").empty());

  // A corrupt chunk makes the acquire fail cleanly.
  auto& chunks = images.images["333/fn"].chunks;
  images.store->corrupt(chunks[0].id, "garbage");
  CHECK_FALSE(library->acquire("333", "fn", root).empty());
  CHECK(mounts_under(dir.path + "/lib").empty());
  CHECK(fs::is_empty(dir.path + "/lib/files"));
}

TEST_CASE("image_library: open detaches the mounts of a killed worker") {
  if (!can_mount("image_library stale mounts"))
    return;
  if (!storage::lazy_image_server::available()) {
    MESSAGE("skipped image_library stale mounts: /dev/fuse is not usable");
    return;
  }
  temp_dir dir;
  catalog images;
  images.add(dir.path, "444/fn", "survivor\n", 1);
  auto lib_dir = dir.path + "/lib";
  // Someone else's mount next to the library's directories stays.
  fs::create_directories(dir.path + "/lib/keep");
  REQUIRE(::mount("none", (dir.path + "/lib/keep").c_str(), "tmpfs", 0, "size=1m") == 0);

  // A worker that mounts an image and is killed with SIGKILL.
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(ready[0]);
    std::string error, root;
    auto library =
        vmm::image_library::open(lib_dir, images.cache(), images.resolver(), true, error);
    if (!library || !library->acquire("444", "fn", root).empty()
        || read_file(root + "/greeting.txt") != "survivor\n")
      ::_exit(1);
    char ok = 1;
    if (::write(ready[1], &ok, 1) != 1)
      ::_exit(1);
    ::kill(::getpid(), SIGKILL);
    ::_exit(1);
  }
  ::close(ready[1]);
  char ok = 0;
  auto got = ::read(ready[0], &ok, 1);
  ::close(ready[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(got == 1);
  REQUIRE(WIFSIGNALED(status));
  CHECK(mounts_under(lib_dir + "/mnt").size() == 1);
  CHECK(mounts_under(lib_dir + "/fuse").size() == 1);

  std::string error;
  auto library = vmm::image_library::open(lib_dir, images.cache(), images.resolver(), true, error);
  REQUIRE_MESSAGE(library, error);
  CHECK(mounts_under(lib_dir + "/mnt").empty());
  CHECK(mounts_under(lib_dir + "/fuse").size() == 1); // the new server only
  CHECK(mounts_under(lib_dir + "/keep").size() == 1);
  std::string root;
  REQUIRE(library->acquire("444", "fn", root).empty());
  CHECK(read_file(root + "/greeting.txt") == "survivor\n");
  library.reset();
  CHECK(mounts_under(lib_dir + "/mnt").empty());
  CHECK(mounts_under(lib_dir + "/fuse").empty());
  CHECK(mounts_under(lib_dir + "/keep").size() == 1);
  ::umount2((lib_dir + "/keep").c_str(), MNT_DETACH);
}

TEST_CASE("image_library: a lazy image's next mounts load what its last two starts read first") {
  if (!can_mount("image_library start profile"))
    return;
  if (!storage::lazy_image_server::available()) {
    MESSAGE("skipped image_library start profile: /dev/fuse is not usable");
    return;
  }
  temp_dir dir;
  catalog images;
  images.add(dir.path, "555/fn", "profiled\n", 6);
  auto lib_dir = dir.path + "/lib";
  auto big2 = read_file(dir.path + "/tree-555_fn/big2");
  // Two starts, each by a new library with a cold cache (a restarted
  // worker), read the same files.
  for (int start = 0; start < 2; ++start) {
    std::string error, root;
    auto library =
        vmm::image_library::open(lib_dir, images.cache(), images.resolver(), true, error);
    REQUIRE_MESSAGE(library, error);
    REQUIRE(library->acquire("555", "fn", root).empty());
    CHECK(read_file(root + "/greeting.txt") == "profiled\n");
    CHECK(read_file(root + "/big2") == big2);
    library->release("555", "fn");
    CHECK(fs::exists(lib_dir + "/profiles/555-fn"));
  }
  storage::start_profiles profiles(lib_dir + "/profiles");
  auto ahead = profiles.ahead("555-fn", images.images["555/fn"].chunks.size());
  // The metadata's chunk and the 1 MiB file's 2 or 3.
  CHECK(ahead.size() >= 3);

  // The third start: those chunks load while the image mounts, before
  // anyone reads them (the mount itself reads the first).
  auto store = std::make_shared<counting_store>(images.store);
  auto cache = std::make_shared<storage::chunk_cache>(store, "", uint64_t{32} << 20, 0);
  std::string error, root;
  auto library = vmm::image_library::open(lib_dir, cache, images.resolver(), true, error);
  REQUIRE_MESSAGE(library, error);
  REQUIRE(library->acquire("555", "fn", root).empty());
  auto& chunks = images.images["555/fn"].chunks;
  auto all_asked = [&] {
    return std::all_of(ahead.begin(), ahead.end(),
                       [&](uint32_t i) { return store->gets(chunks[i].id) > 0; });
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!all_asked() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(all_asked());
  // Reading them and the file fetches none of them again.
  std::shared_ptr<const std::string> text;
  for (auto index : ahead)
    CHECK(cache->read(chunks[index], text).empty());
  CHECK(read_file(root + "/big2") == big2);
  for (auto index : ahead)
    CHECK(store->gets(chunks[index].id) == 1);
  library->release("555", "fn");
}
