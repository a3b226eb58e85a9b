#include "nimbus/vmm/image_mount.hpp"

#include <fcntl.h>
#include <linux/loop.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

extern char** environ;

namespace nimbus::vmm {

namespace {

namespace fs = std::filesystem;

constexpr unsigned long image_flags = MS_RDONLY | MS_NOSUID | MS_NODEV;

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

std::string failure(const std::string& step, int err) {
  return step + ": " + std::strerror(err);
}

// FS_IOC_GETFSSYSFSPATH (Linux 6.10; newer than our build headers): the
// file system's name under /sys/fs, "erofs/erofs-<n>", where erofs-<n> is
// also the name of the backing device info a file-backed erofs mount has.
struct sysfs_path_arg {
  uint8_t length;
  char name[128];
};
constexpr unsigned long get_sysfs_path = _IOR(0x15, 1, sysfs_path_arg);

// erofs reads a file ahead by its mount's backing device info, 128 KiB by
// default: on a lazy image, 40 FUSE requests for a 5 MiB file. A chunk at a
// time (512 KiB) cuts a warm 5 MiB read by about a quarter and its CPU time
// by a fifth, and a page fault's read-around in a binary covers more of it.
// Best effort: an older kernel (no ioctl) keeps the default.
constexpr const char* erofs_read_ahead_kb = "512";

void set_read_ahead(const std::string& target) {
  fd_guard root{::open(target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  sysfs_path_arg path{};
  if (root.fd < 0 || ::ioctl(root.fd, get_sysfs_path, &path) != 0 || path.length == 0
      || path.length >= sizeof path.name)
    return;
  std::string name(path.name, path.length);
  auto slash = name.find('/');
  if (name.rfind("erofs/", 0) != 0 || name.find('/', slash + 1) != std::string::npos
      || name.size() == slash + 1 || name.find("..") != std::string::npos)
    return;
  auto knob = "/sys/class/bdi/" + name.substr(slash + 1) + "/read_ahead_kb";
  fd_guard file{::open(knob.c_str(), O_WRONLY | O_CLOEXEC)};
  // A failed write leaves the default.
  if (file.fd < 0 || ::write(file.fd, erofs_read_ahead_kb, std::strlen(erofs_read_ahead_kb)) < 0)
    return;
}

// erofs mounts files directly since Linux 6.12. With `directio` (Linux
// 6.13) erofs reads the file's data with direct I/O into its own page cache:
// the data is not cached twice, and on a lazy image (FUSE) each read of
// erofs becomes one FUSE request, sent asynchronously, instead of a buffered
// read of the FUSE file that waits for the kernel's FUSE readahead; a cold
// 5 MiB read costs a few ms less. Metadata still goes through the file's
// page cache. A kernel that does not know the option refuses it (EINVAL):
// then without it.
std::string mount_file(const std::string& image, const std::string& target) {
  if (::mount(image.c_str(), target.c_str(), "erofs", image_flags, "directio") != 0
      && (errno != EINVAL
          || ::mount(image.c_str(), target.c_str(), "erofs", image_flags, nullptr) != 0))
    return failure("file-backed erofs mount", errno);
  set_read_ahead(target);
  return {};
}

// A loop device: ask loop-control for a free one and configure it in one
// step (LOOP_CONFIGURE). Another process may take the same free device at
// the same time; LOOP_CONFIGURE then fails with EBUSY and we ask again.
// LO_FLAGS_AUTOCLEAR frees the device when its last user goes: our fd if the
// mount fails, else the mount when it is unmounted.
std::string mount_loop(const std::string& image, const std::string& target) {
  fd_guard backing{::open(image.c_str(), O_RDONLY | O_CLOEXEC)};
  if (backing.fd < 0)
    return failure("open image", errno);
  fd_guard control{::open("/dev/loop-control", O_RDWR | O_CLOEXEC)};
  if (control.fd < 0)
    return failure("open /dev/loop-control", errno);
  for (int attempt = 0; attempt < 64; ++attempt) {
    int number = ::ioctl(control.fd, LOOP_CTL_GET_FREE);
    if (number < 0)
      return failure("LOOP_CTL_GET_FREE", errno);
    auto device = "/dev/loop" + std::to_string(number);
    fd_guard loop{::open(device.c_str(), O_RDONLY | O_CLOEXEC)};
    if (loop.fd < 0)
      return failure("open " + device, errno);
    loop_config config{};
    config.fd = static_cast<uint32_t>(backing.fd);
    config.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
    auto name = fs::path(image).filename().string();
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), name.c_str(), LO_NAME_SIZE - 1);
    if (::ioctl(loop.fd, LOOP_CONFIGURE, &config) != 0) {
      if (errno == EBUSY)
        continue;
      return failure("LOOP_CONFIGURE " + device, errno);
    }
    if (::mount(device.c_str(), target.c_str(), "erofs", image_flags, nullptr) != 0)
      return failure("erofs mount of " + device, errno);
    return {};
  }
  return "loop devices: every free device was taken by someone else";
}

// Runs `fsck.erofs --extract=<target> <image>` (erofs-utils 1.5 syntax) with
// its output discarded: it names tenant files.
std::string extract(const std::string& image, const std::string& target) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  for (int fd = 0; fd <= 2; ++fd)
    posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
  std::string program = "fsck.erofs";
  std::string option = "--extract=" + target;
  std::vector<char*> argv{program.data(), option.data(), const_cast<char*>(image.c_str()), nullptr};
  pid_t child = -1;
  int spawned = ::posix_spawnp(&child, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0)
    return failure("spawn fsck.erofs", spawned);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0) {
    if (errno != EINTR)
      return failure("wait for fsck.erofs", errno);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return "fsck.erofs --extract failed (status " + std::to_string(status) + ")";
  return {};
}

// Removes everything inside `dir`, not the directory itself; never follows
// symbolic links.
std::string clear_directory(const std::string& dir) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code remove_ec;
    fs::remove_all(it->path(), remove_ec);
    if (remove_ec)
      return "remove " + it->path().string() + ": " + remove_ec.message();
  }
  if (ec)
    return "list " + dir + ": " + ec.message();
  return {};
}

std::string mount_extracted(const std::string& image, const std::string& target) {
  if (auto error = extract(image, target); !error.empty()) {
    clear_directory(target);
    return error;
  }
  // A read-only bind of the tree over itself, so the code cannot be changed
  // through this path.
  if (::mount(target.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    auto error = failure("bind extracted tree", errno);
    clear_directory(target);
    return error;
  }
  if (::mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | image_flags, nullptr) != 0) {
    auto error = failure("remount extracted tree read-only", errno);
    ::umount2(target.c_str(), MNT_DETACH);
    clear_directory(target);
    return error;
  }
  return {};
}

} // namespace

const char* to_string(mount_mode mode) {
  switch (mode) {
  case mount_mode::file:
    return "file";
  case mount_mode::loop:
    return "loop";
  case mount_mode::extracted:
    return "extracted";
  }
  return "unknown";
}

std::string mount_erofs_with(const std::string& image_file, const std::string& target,
                             mount_mode mode) {
  switch (mode) {
  case mount_mode::file:
    return mount_file(image_file, target);
  case mount_mode::loop:
    return mount_loop(image_file, target);
  case mount_mode::extracted:
    return mount_extracted(image_file, target);
  }
  return "unknown mount mode";
}

std::string mount_erofs(const std::string& image_file, const std::string& target,
                        mount_mode& used) {
  std::string errors;
  for (auto mode : {mount_mode::file, mount_mode::loop, mount_mode::extracted}) {
    auto error = mount_erofs_with(image_file, target, mode);
    if (error.empty()) {
      used = mode;
      return {};
    }
    errors += (errors.empty() ? "" : "; ") + error;
  }
  return "mount erofs image at " + target + ": " + errors;
}

std::string unmount_erofs(const std::string& target, mount_mode used) {
  if (::umount2(target.c_str(), MNT_DETACH) != 0) {
    int err = errno;
    // An extracted tree whose bind mount is already gone is still removed.
    if (used != mount_mode::extracted || err != EINVAL)
      return failure("unmount " + target, err);
  }
  if (used == mount_mode::extracted)
    return clear_directory(target);
  return {};
}

} // namespace nimbus::vmm
