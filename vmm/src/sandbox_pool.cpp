#include "nimbus/vmm/sandbox_pool.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace nimbus::vmm {

sandbox_pool::sandbox_pool(std::string helper, std::shared_ptr<cgroup_layout> layout,
                           size_t target)
  : helper_(std::move(helper)), layout_(std::move(layout)), target_(target) {
  thread_ = std::thread{[this] { refill(); }};
}

sandbox_pool::~sandbox_pool() {
  {
    std::lock_guard<std::mutex> guard{mutex_};
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (auto& p : ready_) {
    p.jail.reset();
    if (p.output_fd >= 0)
      ::close(p.output_fd);
  }
}

std::optional<prepared_sandbox> sandbox_pool::take() {
  std::optional<prepared_sandbox> out;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (ready_.empty())
      return out;
    out.emplace(std::move(ready_.front()));
    ready_.pop_front();
  }
  wake_.notify_all();
  return out;
}

size_t sandbox_pool::created() const {
  std::lock_guard<std::mutex> guard{mutex_};
  return created_;
}

void sandbox_pool::refill() {
  uint64_t sequence = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock{mutex_};
      wake_.wait(lock, [this] { return stop_ || ready_.size() < target_; });
      if (stop_)
        return;
    }
    std::string error;
    auto name = "pool-" + std::to_string(::getpid()) + "-" + std::to_string(sequence++);
    // Default limits until an environment takes it and sets its own.
    auto group = cgroup::create(*layout_, name, {}, error);
    if (!group)
      return; // no cgroups here: environments prepare their own
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0)
      return;
    ::fcntl(out[0], F_SETPIPE_SZ, 1 << 20);
    auto jail = jail_process::spawn(helper_, group->procs_files(), out[1], out[1], error);
    ::close(out[1]);
    // Ready means joined: that is the slow step this pool exists to hide.
    if (!jail || !jail->wait_joined(std::chrono::seconds{10})) {
      ::close(out[0]);
      return;
    }
    std::lock_guard<std::mutex> guard{mutex_};
    ready_.push_back(prepared_sandbox{std::move(*group), std::move(jail), out[0]});
    ++created_;
  }
}

} // namespace nimbus::vmm
