#include "nimbus/vmm/image_mount.hpp"

#include "nimbus/storage/chunk_cache.hpp"
#include "nimbus/storage/lazy_image.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

using namespace nimbus;
using nimbus::vmm::mount_mode;

namespace {

namespace fs = std::filesystem;

struct temp_dir {
  std::string path;
  temp_dir() {
    char name[] = "/tmp/nimbus-mount-test-XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    path = name;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Unmounts on scope exit, also when a check fails.
struct mount_guard {
  std::string target;
  mount_mode mode = mount_mode::file;
  bool mounted = false;
  ~mount_guard() {
    if (mounted)
      vmm::unmount_erofs(target, mode);
  }
};

// The fields after " - " of the mount at `point` in /proc/self/mountinfo
// ("<type> <source> <super options>"), or nothing when it is not mounted.
std::optional<std::string> mountinfo_tail(const std::string& point) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount_point;
    fields >> id >> parent >> dev >> root >> mount_point;
    if (mount_point != point)
      continue;
    auto dash = line.find(" - ");
    return dash == std::string::npos ? std::string{} : line.substr(dash + 3);
  }
  return std::nullopt;
}

std::string mount_source(const std::string& point) {
  auto fields = mountinfo_tail(point);
  if (!fields)
    return {};
  std::istringstream tail(*fields);
  std::string type, source;
  tail >> type >> source;
  return source.empty() ? "?" : source;
}

// The super block options of the mount at `point` ("ro,user_xattr,...").
std::string super_options(const std::string& point) {
  auto fields = mountinfo_tail(point);
  if (!fields)
    return {};
  std::istringstream tail(*fields);
  std::string type, source, options;
  tail >> type >> source >> options;
  return options;
}

bool is_mount_point(const std::string& path) {
  return !mount_source(path).empty();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
}

std::string random_bytes(size_t size, uint32_t seed) {
  std::mt19937 random(seed);
  std::string out(size, '\0');
  for (auto& c : out)
    c = static_cast<char>(random());
  return out;
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

// A small tree: two small files, a symlink, a directory, and `big_files`
// files of 1 MiB of random data; made into an erofs image at `image`.
void make_image(const std::string& dir, const std::string& image, int big_files) {
  fs::create_directories(dir + "/sub");
  write_file(dir + "/hello.txt", "hello from erofs\n");
  write_file(dir + "/sub/small.txt", std::string(300, 's'));
  fs::create_symlink("hello.txt", dir + "/link");
  for (int i = 0; i < big_files; ++i)
    write_file(dir + "/big" + std::to_string(i), random_bytes(1 << 20, static_cast<uint32_t>(i)));
  auto command = "mkfs.erofs -Enoinline_data --quiet " + image + " " + dir + " >/dev/null 2>&1";
  REQUIRE(std::system(command.c_str()) == 0);
}

bool kernel_at_least(int major, int minor) {
  utsname name{};
  ::uname(&name);
  int have_major = 0, have_minor = 0;
  std::sscanf(name.release, "%d.%d", &have_major, &have_minor);
  return have_major > major || (have_major == major && have_minor >= minor);
}

// The backing file of loop device /dev/loopN, empty when it is free.
std::string loop_backing(const std::string& device) {
  auto name = fs::path(device).filename().string();
  return read_file("/sys/block/" + name + "/loop/backing_file");
}

} // namespace

TEST_CASE("image_mount: each mode mounts a real erofs image read-only and unmounts cleanly") {
  if (!can_mount("image_mount modes"))
    return;
  temp_dir dir;
  auto image = dir.path + "/image.erofs";
  make_image(dir.path + "/tree", image, 2);
  auto big = read_file(dir.path + "/tree/big1");
  for (auto mode : {mount_mode::file, mount_mode::loop, mount_mode::extracted}) {
    std::string mode_name = vmm::to_string(mode);
    CAPTURE(mode_name);
    auto target = dir.path + "/mnt-" + vmm::to_string(mode);
    fs::create_directories(target);
    std::string source;
    {
      mount_guard guard{target, mode};
      auto error = vmm::mount_erofs_with(image, target, mode);
      REQUIRE_MESSAGE(error.empty(), error);
      guard.mounted = true;
      source = mount_source(target);
      CHECK(!source.empty());
      CHECK(read_file(target + "/hello.txt") == "hello from erofs\n");
      CHECK(read_file(target + "/sub/small.txt") == std::string(300, 's'));
      CHECK(read_file(target + "/big1") == big);
      CHECK(fs::read_symlink(target + "/link") == "hello.txt");
      // Read-only: neither new files nor changes.
      CHECK(::open((target + "/new").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644) < 0);
      CHECK(::open((target + "/hello.txt").c_str(), O_WRONLY | O_CLOEXEC) < 0);
      if (mode == mount_mode::loop) {
        CHECK(source.rfind("/dev/loop", 0) == 0);
        CHECK(loop_backing(source).find(image) == 0);
      }
      guard.mounted = false;
      error = vmm::unmount_erofs(target, mode);
      CHECK_MESSAGE(error.empty(), error);
    }
    CHECK_FALSE(is_mount_point(target));
    CHECK(fs::is_empty(target));
    if (mode == mount_mode::loop) {
      // The device clears itself (autoclear); another test may reuse the
      // number at once, so only check that it no longer holds our image.
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (loop_backing(source).find(image) == 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      CHECK(loop_backing(source).find(image) != 0);
    }
  }
}

TEST_CASE("image_mount: mount_erofs prefers the file-backed mount and reports failures") {
  if (!can_mount("image_mount auto"))
    return;
  temp_dir dir;
  auto image = dir.path + "/image.erofs";
  make_image(dir.path + "/tree", image, 0);
  auto target = dir.path + "/mnt";
  fs::create_directories(target);
  {
    mount_guard guard{target};
    auto error = vmm::mount_erofs(image, target, guard.mode);
    REQUIRE_MESSAGE(error.empty(), error);
    guard.mounted = true;
    if (kernel_at_least(6, 12))
      CHECK(guard.mode == mount_mode::file);
    CHECK(read_file(target + "/hello.txt") == "hello from erofs\n");
  }
  CHECK_FALSE(is_mount_point(target));
  // Not an erofs image: every mode fails, nothing is left behind.
  write_file(dir.path + "/junk", std::string(8192, 'j'));
  mount_mode used = mount_mode::file;
  auto error = vmm::mount_erofs(dir.path + "/junk", target, used);
  CHECK_FALSE(error.empty());
  CHECK_FALSE(is_mount_point(target));
  CHECK(fs::is_empty(target));
}

TEST_CASE("image_mount: an erofs image served through FUSE loads only what is read") {
  if (!can_mount("image_mount lazy"))
    return;
  if (!storage::lazy_image_server::available()) {
    MESSAGE("skipped image_mount lazy: /dev/fuse is not usable");
    return;
  }
  temp_dir dir;
  auto image = dir.path + "/image.erofs";
  make_image(dir.path + "/tree", image, 8);
  auto bytes = read_file(image);
  auto store = std::make_shared<storage::memory_chunk_store>();
  storage::convergence_secret secret;
  secret.fill(3);
  std::vector<storage::chunk_ref> chunks;
  for (size_t at = 0; at < bytes.size(); at += storage::chunk_size) {
    auto sealed =
        storage::seal_chunk(secret, std::string_view(bytes).substr(at, storage::chunk_size));
    REQUIRE(store->put(sealed.ref.id, sealed.bytes).empty());
    chunks.push_back(sealed.ref);
  }
  REQUIRE(chunks.size() >= 16);
  for (auto mode : {mount_mode::file, mount_mode::loop}) {
    std::string mode_name = vmm::to_string(mode);
    CAPTURE(mode_name);
    auto cache = std::make_shared<storage::chunk_cache>(store, "", uint64_t{64} << 20, 0);
    std::string error;
    auto server = storage::lazy_image_server::start(dir.path + "/fuse", cache, error);
    REQUIRE_MESSAGE(server, error);
    std::string file;
    REQUIRE(server->add("image", bytes.size(), chunks, file).empty());
    auto target = dir.path + "/mnt";
    fs::create_directories(target);
    auto before = store->reads();
    {
      mount_guard guard{target, mode};
      error = vmm::mount_erofs_with(file, target, mode);
      REQUIRE_MESSAGE(error.empty(), error);
      guard.mounted = true;
      CHECK(read_file(target + "/hello.txt") == "hello from erofs\n");
      CHECK(read_file(target + "/sub/small.txt") == std::string(300, 's'));
      auto fetched = store->reads() - before;
      MESSAGE(mode_name << ": fetched " << fetched << " of " << chunks.size() << " chunks");
      CHECK(fetched >= 1);
      CHECK(fetched <= 4);
      // A big file is right too, fetched on demand.
      CHECK(read_file(target + "/big5") == read_file(dir.path + "/tree/big5"));
    }
    CHECK_FALSE(is_mount_point(target));
  }
}

TEST_CASE("image_mount: a file-backed mount reads its file with direct I/O, a chunk ahead") {
  if (!can_mount("image_mount file options"))
    return;
  if (!kernel_at_least(6, 13)) {
    MESSAGE("skipped image_mount file options: erofs has no directio before Linux 6.13");
    return;
  }
  temp_dir dir;
  auto image = dir.path + "/image.erofs";
  make_image(dir.path + "/tree", image, 1);
  auto target = dir.path + "/mnt";
  fs::create_directories(target);
  mount_guard guard{target, mount_mode::file};
  auto error = vmm::mount_erofs_with(image, target, mount_mode::file);
  REQUIRE_MESSAGE(error.empty(), error);
  guard.mounted = true;
  CHECK((',' + super_options(target) + ',').find(",directio,") != std::string::npos);
  CHECK(read_file(target + "/big0") == read_file(dir.path + "/tree/big0"));
  // The mount's backing device info, named by FS_IOC_GETFSSYSFSPATH.
  struct {
    uint8_t length;
    char name[128];
  } path{};
  int root = ::open(target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(root >= 0);
  int got = ::ioctl(root, _IOR(0x15, 1, decltype(path)), &path);
  ::close(root);
  REQUIRE(got == 0);
  std::string name(path.name, path.length);
  REQUIRE(name.rfind("erofs/", 0) == 0);
  CHECK(read_file("/sys/class/bdi/" + name.substr(6) + "/read_ahead_kb") == "512\n");
}
