#pragma once

/// A worker's cache of chunks in front of a chunk store (ARCHITECTURE.md §5).
///
/// Reads go through three tiers:
///   memory  verified plaintext, least recently used first out, bounded in bytes;
///   disk    sealed chunks as files `<disk_dir>/<hex id>`, LRU, bounded in bytes;
///           skipped when the store is local (it would only copy local files);
///   store   the chunk store itself.
/// Every chunk that comes from disk or the store is verified and decrypted with
/// open_chunk (CS-2): a corrupt disk copy is dropped and fetched again from the
/// store; a corrupt store copy is an error, never wrong bytes. Concurrent reads
/// of the same missing chunk fetch it once (single flight).
///
/// The disk tier's files from a previous run are kept and reused: they are
/// verified like any other disk copy when read. Files are written to a
/// temporary name and renamed, without fsync: a torn copy fails verification.

#include "nimbus/storage/chunk.hpp"

#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace nimbus::storage {

/// Counters of a chunk_cache since it was made.
struct cache_stats {
  /// Reads served from verified plaintext in memory.
  uint64_t memory_hits = 0;
  /// Reads served from a verified disk copy.
  uint64_t disk_hits = 0;
  /// Reads that went to the chunk store (successful or not).
  uint64_t store_reads = 0;
  /// Sealed bytes received from the chunk store.
  uint64_t fetched_bytes = 0;
  /// Reads that waited for another thread's fetch of the same chunk.
  uint64_t shared_fetches = 0;
};

/// Thread-safe cache of chunks; see the file comment.
class chunk_cache {
public:
  /// Caches chunks of `store` in up to `memory_bytes` of plaintext and
  /// `disk_bytes` of sealed files under `disk_dir` (created when needed).
  /// A zero budget disables that tier.
  chunk_cache(std::shared_ptr<chunk_store> store, std::string disk_dir, uint64_t memory_bytes,
              uint64_t disk_bytes);
  chunk_cache(const chunk_cache&) = delete;
  chunk_cache& operator=(const chunk_cache&) = delete;

  /// Reads the verified plaintext of `ref`. Returns an error text (naming the
  /// chunk id, never key material) and leaves `plaintext` null on failure.
  std::string read(const chunk_ref& ref, std::shared_ptr<const std::string>& plaintext);

  /// Loads `ref` into the memory tier as read() would, unless it is there
  /// already or another thread is loading it: unlike read() it never waits
  /// for another thread, so read-ahead threads stay free for the chunks
  /// nobody loads yet. Returns true when it loaded it (or tried and failed:
  /// the error shows again to the reader that needs the chunk). Does nothing
  /// without a memory tier.
  bool preload(const chunk_ref& ref);

  cache_stats stats() const;

  /// True when the disk tier is in use (a budget and a non-local store).
  bool disk_enabled() const {
    return disk_enabled_;
  }

private:
  struct ref_hash {
    size_t operator()(const chunk_ref& ref) const noexcept {
      return chunk_id_hash{}(ref.id);
    }
  };
  struct memory_entry {
    std::shared_ptr<const std::string> plaintext;
    std::list<chunk_ref>::iterator lru;
  };
  struct disk_entry {
    uint64_t bytes = 0;
    std::list<chunk_id>::iterator lru;
  };
  struct flight {
    bool done = false;
    std::string error;
    std::shared_ptr<const std::string> plaintext;
    std::condition_variable finished;
  };

  // Runs the caller's flight (registered in flights_) to its end: fetches,
  // remembers and wakes the threads waiting for it.
  std::string complete(const chunk_ref& ref, const std::shared_ptr<flight>& own,
                       std::shared_ptr<const std::string>& plaintext);
  std::string fetch(const chunk_ref& ref, std::shared_ptr<const std::string>& plaintext);
  // `sealed` is a buffer to read the disk copy into.
  bool read_disk(const chunk_ref& ref, std::string& sealed, std::string& plaintext);
  void write_disk(const chunk_id& id, const std::string& sealed);
  void drop_disk(const chunk_id& id);
  void remember(const chunk_ref& ref, const std::shared_ptr<const std::string>& plaintext);
  void load_disk_index();
  void evict_disk_locked();
  std::string disk_path(const chunk_id& id) const;

  std::shared_ptr<chunk_store> store_;
  std::string disk_dir_;
  uint64_t memory_budget_;
  uint64_t disk_budget_;
  bool disk_enabled_;

  mutable std::mutex mutex_;
  // Memory tier: keyed by the whole ref, so a ref with a right id and a wrong
  // key never sees plaintext (it was only ever opened under the right key).
  std::unordered_map<chunk_ref, memory_entry, ref_hash> memory_;
  std::list<chunk_ref> memory_lru_; // front = most recently used
  uint64_t memory_used_ = 0;
  // Disk tier: keyed by id (the file name); sealed bytes need no key.
  std::unordered_map<chunk_id, disk_entry, chunk_id_hash> disk_;
  std::list<chunk_id> disk_lru_;
  uint64_t disk_used_ = 0;
  std::unordered_map<chunk_ref, std::shared_ptr<flight>, ref_hash> flights_;
  // Buffers for sealed chunks, lent to fetches (chunk_cache.cpp).
  class buffer_lease;
  std::vector<std::unique_ptr<std::string>> spare_buffers_;
  cache_stats stats_;
  uint64_t temp_counter_ = 0;
};

} // namespace nimbus::storage
