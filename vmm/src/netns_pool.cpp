#include "nimbus/vmm/netns_pool.hpp"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace nimbus::vmm {

std::string bring_up_loopback() {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0)
    return std::string{"socket for loopback: "} + std::strerror(errno);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  std::string error;
  if (::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    error = std::string{"SIOCGIFFLAGS lo: "} + std::strerror(errno);
  } else {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
      error = std::string{"SIOCSIFFLAGS lo: "} + std::strerror(errno);
  }
  ::close(s);
  return error;
}

netns_pool::netns_pool(std::string directory, size_t target)
  : directory_(std::move(directory)), target_(target) {
  std::error_code ec;
  if (std::filesystem::exists(directory_, ec))
    for (const auto& entry : std::filesystem::directory_iterator(directory_, ec))
      release(entry.path().string());
  std::filesystem::create_directories(directory_, ec);
  thread_ = std::thread{[this] { refill(); }};
}

netns_pool::~netns_pool() {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (const auto& path : ready_)
    release(path);
}

std::string netns_pool::take() {
  std::string path;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (ready_.empty())
      return {};
    path = std::move(ready_.front());
    ready_.pop_front();
  }
  wake_.notify_all();
  return path;
}

void netns_pool::release(const std::string& path) {
  ::umount2(path.c_str(), MNT_DETACH);
  ::unlink(path.c_str());
}

size_t netns_pool::created() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return created_;
}

void netns_pool::refill() {
  // This thread moves into each new namespace in turn (setns and unshare of
  // the network namespace are per thread), so the rest of the process never
  // leaves the host's.
  uint64_t sequence = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock{mutex_};
      wake_.wait(lock, [this] { return stop_ || ready_.size() < target_; });
      if (stop_)
        return;
    }
    auto path = directory_ + "/ns-" + std::to_string(::getpid()) + "-" + std::to_string(sequence++);
    int fd = ::open(path.c_str(), O_CREAT | O_RDONLY | O_CLOEXEC, 0600);
    if (fd < 0)
      return;
    ::close(fd);
    if (::unshare(CLONE_NEWNET) != 0 || !bring_up_loopback().empty()
        || ::mount("/proc/thread-self/ns/net", path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      // Not permitted here: leave sandboxes to create their own namespaces.
      ::unlink(path.c_str());
      return;
    }
    std::lock_guard<std::mutex> guard{mutex_};
    ready_.push_back(std::move(path));
    ++created_;
  }
}

} // namespace nimbus::vmm
