#pragma once

/// A pool of sandbox helpers started ahead of time.
///
/// On cgroup v1 a process joining a memory cgroup waited 5-27 ms here (writes
/// to cgroup.procs), which was most of a cold start. The pool starts
/// nimbus-jail helpers on its own thread, each in a fresh cgroup it has
/// already joined, with its output pipe, waiting for a spec. A new
/// environment takes one, sets the cgroup's limits and hands over the spec:
/// the slow join is off the critical path. A helper serves one sandbox.
///
/// The helpers die with the pool's thread (parent-death signal), i.e. with
/// the worker.

#include "nimbus/vmm/cgroup.hpp"
#include "nimbus/vmm/jail.hpp"

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace nimbus::vmm {

/// One helper waiting for its spec.
struct prepared_sandbox {
  cgroup group;
  std::unique_ptr<jail_process> jail;
  /// Read end of the runtime's stdout/stderr pipe.
  int output_fd = -1;
};

/// Prepared sandbox helpers, refilled in the background.
class sandbox_pool {
public:
  /// Keeps up to `target` helpers of `helper` ready, in cgroups named
  /// "pool-<n>" under `layout`.
  sandbox_pool(std::string helper, std::shared_ptr<cgroup_layout> layout, size_t target);

  /// Stops refilling and ends the helpers nobody took.
  ~sandbox_pool();

  sandbox_pool(const sandbox_pool&) = delete;
  sandbox_pool& operator=(const sandbox_pool&) = delete;

  /// Takes a prepared helper; nothing if none is ready.
  std::optional<prepared_sandbox> take();

  /// Helpers started so far.
  size_t created() const;

private:
  void refill();
  std::string helper_;
  std::shared_ptr<cgroup_layout> layout_;
  size_t target_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<prepared_sandbox> ready_;
  size_t created_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

} // namespace nimbus::vmm
