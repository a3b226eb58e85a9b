#pragma once

/// A pool of prepared network namespaces for new sandboxes.
///
/// Creating a network namespace is cheap on an idle kernel (about 0.5 ms
/// here) but slow while others are being torn down (10-20 ms measured when
/// sandboxes come and go), and a cold start waits for it. The pool creates
/// namespaces ahead of time on its own thread, each with loopback up and kept
/// alive by a bind mount of its nsfs file (as `ip netns` does); a sandbox
/// joins one with setns() instead of unsharing a new one. A namespace serves
/// exactly one sandbox and is released (unmounted) when that sandbox ends.

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace nimbus::vmm {

/// Brings the loopback interface up in the calling thread's network
/// namespace (a new namespace starts with it down). Returns an error text,
/// empty on success.
std::string bring_up_loopback();

/// Prepared network namespaces, refilled in the background.
class netns_pool {
public:
  /// Keeps up to `target` namespaces ready as files in `directory` (created;
  /// leftovers of an earlier run are removed).
  netns_pool(std::string directory, size_t target);

  /// Stops refilling and releases the namespaces nobody took.
  ~netns_pool();

  netns_pool(const netns_pool&) = delete;
  netns_pool& operator=(const netns_pool&) = delete;

  /// Takes a ready namespace: the path of its file, or empty if none is ready
  /// (the sandbox then creates its own).
  std::string take();

  /// Releases a namespace taken from a pool: unmounts and removes its file.
  static void release(const std::string& path);

  /// Namespaces created so far (for tests and metrics).
  size_t created() const;

private:
  void refill();
  std::string directory_;
  size_t target_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::string> ready_;
  size_t created_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

} // namespace nimbus::vmm
