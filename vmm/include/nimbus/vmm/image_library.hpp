#pragma once

/// The worker's view of code images (ARCHITECTURE.md §5): mounts each image
/// read-only while some sandbox uses it.
///
/// Layout under the library's directory:
///   fuse/                     the lazy image FUSE file system (one file per image)
///   mnt/<account>-<name>      the image's erofs mount, the root sandboxes see
///   files/                    images materialised in full when FUSE is not used
///   profiles/<account>-<name> the image's start profile (storage/start_profiles.hpp)
///
/// With FUSE (lazy), an image file is served chunk by chunk through the chunk
/// cache, so a function only loads what it reads. Without it (no /dev/fuse, or
/// lazy off) every chunk is read through the cache into files/ first.
/// A lazy mount first queues the chunks its start profile names for the
/// FUSE server's read-ahead threads, and an unmount records what the mount
/// read first into the profile; profiles outlive restarts of the worker.
/// open() detaches mounts a killed worker left under fuse/ and mnt/ of this
/// directory (and only there) and wipes mnt/ and files/.

#include "nimbus/storage/chunk_cache.hpp"
#include "nimbus/storage/lazy_image.hpp"
#include "nimbus/storage/start_profiles.hpp"
#include "nimbus/vmm/image_mount.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace nimbus::vmm {

/// Finds an image's manifest: its size and chunks. Returns an error text.
using image_resolver =
    std::function<std::string(const std::string& account, const std::string& name, uint64_t& size,
                              std::vector<storage::chunk_ref>& chunks)>;

/// Counters of an image_library.
struct library_stats {
  /// Images mounted now.
  uint64_t mounted = 0;
  /// Mounts so far served lazily through FUSE.
  uint64_t lazy_mounts = 0;
  /// Mounts so far of images materialised in full.
  uint64_t materialized = 0;
  /// Of `mounted`, images no sandbox uses that stay mounted for a while.
  uint64_t lingering = 0;
  /// Acquires served by a lingering mount.
  uint64_t reused = 0;
};

/// How long an image no sandbox uses stays mounted. A new environment of
/// the same code (after a configuration change, or when traffic comes back)
/// then skips the mount, and finds what the last one read in the page cache.
struct linger_policy {
  /// 0: unmount at the last release.
  std::chrono::milliseconds time{0};
  /// At most this many unused mounts; the longest unused goes first.
  size_t max_images = 32;
};

/// Reference-counted read-only mounts of code images; thread-safe.
class image_library {
public:
  /// Opens the library in `dir` (made absolute, created when missing): cleans
  /// up after a killed worker, then starts the FUSE server when `lazy` and
  /// FUSE is usable. Returns null and sets `error` on failure.
  static std::unique_ptr<image_library> open(std::string dir,
                                             std::shared_ptr<storage::chunk_cache> cache,
                                             image_resolver resolve, bool lazy, std::string& error,
                                             linger_policy linger = {});

  /// Unmounts every image, also ones still acquired or lingering, and stops
  /// FUSE.
  ~image_library();
  image_library(const image_library&) = delete;
  image_library& operator=(const image_library&) = delete;

  /// Mounts the image (account, name) unless it is mounted already, counts one
  /// more user and sets `root` to its mount point. Concurrent first acquires
  /// of one image mount it once. `account` is letters, digits and '_';
  /// `name` letters, digits and "._-:@+" (not starting with '.').
  std::string acquire(const std::string& account, const std::string& name, std::string& root);

  /// Drops one user. After the last one the image is unmounted, at once or
  /// after the linger time (see linger_policy).
  void release(const std::string& account, const std::string& name);

  library_stats stats() const;

  /// True when images are served lazily through FUSE.
  bool lazy() const {
    return server_ != nullptr;
  }

  const std::string& directory() const {
    return dir_;
  }

private:
  enum class image_state { mounting, ready, unmounting };
  struct mounted_image {
    image_state state = image_state::mounting;
    uint64_t users = 0;
    std::string root;
    std::string file; // the image file the erofs mount reads
    mount_mode mode = mount_mode::file;
    bool lazy = false;
    /// When `users` last dropped to 0.
    std::chrono::steady_clock::time_point unused_since;
  };

  image_library(std::string dir, std::shared_ptr<storage::chunk_cache> cache,
                image_resolver resolve);
  std::string mount(const std::string& account, const std::string& name, const std::string& key,
                    mounted_image& image);
  void unmount(const std::string& key, const mounted_image& image);
  /// Unmounts lingering images whose time is up, or beyond max_images, until
  /// the library closes.
  void sweep_lingering();
  std::string materialize(const std::string& key, const std::vector<storage::chunk_ref>& chunks,
                          std::string& file);

  std::string dir_;
  std::shared_ptr<storage::chunk_cache> cache_;
  image_resolver resolve_;
  std::unique_ptr<storage::lazy_image_server> server_;
  std::unique_ptr<storage::start_profiles> profiles_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, mounted_image> images_;
  library_stats stats_;
  linger_policy linger_;
  bool closing_ = false;
  std::thread sweeper_;
};

} // namespace nimbus::vmm
