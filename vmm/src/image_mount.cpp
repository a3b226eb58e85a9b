#include "nimbus/vmm/image_mount.hpp"

#include <fcntl.h>
#include <linux/loop.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
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

// erofs mounts files directly since Linux 6.12.
std::string mount_file(const std::string& image, const std::string& target) {
  if (::mount(image.c_str(), target.c_str(), "erofs", image_flags, nullptr) != 0)
    return failure("file-backed erofs mount", errno);
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
