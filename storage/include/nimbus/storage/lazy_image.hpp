#pragma once

/// Lazily loaded images: a read-only FUSE file system (libfuse3, low-level
/// API) whose files are chunked images. A read fetches only the chunks it
/// overlaps, through a chunk_cache, so mounting an erofs image on top of such
/// a file loads only what the function touches (ARCHITECTURE.md §5).
///
/// The file system has one flat directory. Each added image is a regular file
/// of mode 0444 with a fresh inode number; its content never changes, so the
/// kernel may keep its pages cached (keep_cache). A chunk that fails
/// verification makes the read fail with EIO, never return wrong bytes.
///
/// Requests are served by a small pool of threads, so reads of different
/// chunks proceed in parallel. Reads that follow one another through an
/// image (erofs reading a file) get the next chunks loaded ahead by a few
/// read-ahead threads, so that fetches from the store overlap each other and
/// the reader. The server also records which chunks of an image are read
/// first, and loads named chunks ahead on request: the image library keeps
/// these as start profiles (start_profiles.hpp). Stopping the server
/// unmounts lazily: a user still holding a file sees errors, never a hang.

#include "nimbus/storage/chunk.hpp"
#include "nimbus/storage/chunk_cache.hpp"

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

struct fuse_session;

namespace nimbus::storage {

/// One mounted lazy image file system; see the file comment.
class lazy_image_server {
public:
  /// True when /dev/fuse can be opened (FUSE is usable on this machine).
  static bool available();

  /// Mounts the file system at `mount_dir` (created when missing) and starts
  /// serving it. Returns null and sets `error` on failure.
  static std::unique_ptr<lazy_image_server>
  start(const std::string& mount_dir, std::shared_ptr<chunk_cache> cache, std::string& error);

  /// Unmounts (lazily) and joins the serving threads.
  ~lazy_image_server();
  lazy_image_server(const lazy_image_server&) = delete;
  lazy_image_server& operator=(const lazy_image_server&) = delete;

  /// Exposes an image of `size` bytes made of `chunks` (chunk i holds bytes
  /// [i * chunk_size, i * chunk_size + chunks[i].size)) as `<mount_dir>/<name>`
  /// and sets `file_path` to that path. `name` is one path component. Returns
  /// an error when the name is taken or the chunks do not add up to `size`.
  std::string add(const std::string& name, uint64_t size, std::vector<chunk_ref> chunks,
                  std::string& file_path);

  /// Removes a file; users that still have it open keep reading it.
  void remove(const std::string& name);

  /// The chunks of image `name` in the order they were first read since it
  /// was added, at most first_reads_max of them: what a start of the image
  /// needs first (its file system's metadata, the runtime's binary), and
  /// what the next start may load ahead with preload(). Empty for an unknown
  /// name.
  std::vector<uint32_t> first_reads(const std::string& name) const;

  /// Queues chunks `indexes` of image `name` for the read-ahead threads, in
  /// this order (indexes past the image's end are skipped), so that they
  /// load while the image is being mounted and its users start.
  void preload(const std::string& name, const std::vector<uint32_t>& indexes);

  /// How many chunks first_reads() records at most.
  static constexpr size_t first_reads_max = 32;

  const std::string& mount_dir() const {
    return mount_dir_;
  }

private:
  // One image file.
  struct image {
    uint64_t inode = 0;
    std::string name;
    uint64_t size = 0;
    std::vector<chunk_ref> chunks;
    // first_reads(): chunk indexes in the order of their first read.
    mutable std::mutex reads_mutex;
    mutable std::vector<uint32_t> first_reads;
  };
  // The FUSE request handlers (lazy_image.cpp).
  struct handlers;

  lazy_image_server(std::string mount_dir, std::shared_ptr<chunk_cache> cache);
  // lookup() counts a kernel reference to the inode, forget() drops some.
  std::shared_ptr<const image> lookup(const std::string& name);
  void forget(uint64_t inode, uint64_t count);
  std::shared_ptr<const image> find(uint64_t inode) const;
  std::vector<std::shared_ptr<const image>> list() const;
  void serve();
  void stop();
  // Read-ahead: a read that continues a sequential stream queues the next
  // chunks, which the prefetch threads load into the cache while the reader
  // still consumes this one. read_ahead() says how many (lazy_image.cpp).
  uint64_t read_ahead(uint64_t inode, uint64_t begin, uint64_t end);
  // Records the first reads of chunks [first, last] of `img`.
  static void note_reads(const image& img, uint64_t first, uint64_t last);
  void prefetch(const chunk_ref& ref);
  void run_prefetch();

  std::string mount_dir_;
  std::shared_ptr<chunk_cache> cache_;
  fuse_session* session_ = nullptr;
  int stop_fd_ = -1;
  std::vector<std::thread> workers_;

  mutable std::mutex mutex_;
  uint64_t next_inode_ = 2; // 1 is the root directory
  std::unordered_map<std::string, std::shared_ptr<const image>> by_name_;
  // Inodes stay known while the kernel holds references to them (lookups not
  // yet forgotten), also after remove().
  std::unordered_map<uint64_t, std::shared_ptr<const image>> by_inode_;
  std::unordered_map<uint64_t, uint64_t> lookups_;
  // Open file handles (fuse_file_info::fh); the ones the kernel never
  // released (the server stopped first) are freed by the destructor.
  std::unordered_set<std::shared_ptr<const image>*> handles_;

  std::vector<std::thread> prefetchers_;
  std::mutex prefetch_mutex_;
  std::condition_variable prefetch_wake_;
  std::deque<chunk_ref> prefetch_queue_;
  bool prefetch_stop_ = false;
  uint64_t prefetches_ = 0;
  // Recent sequential streams of reads: the image, where the stream got to
  // and how many bytes it read; the oldest is replaced first.
  struct read_stream {
    uint64_t inode = 0;
    uint64_t next = 0;
    uint64_t bytes = 0;
  };
  std::array<read_stream, 8> streams_{};
  size_t next_stream_ = 0;

public:
  /// Chunks queued for read-ahead so far.
  uint64_t prefetches() const;
};

} // namespace nimbus::storage
