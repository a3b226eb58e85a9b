#pragma once

/// Named images (flattened erofs files) stored as deduplicated, convergently
/// encrypted chunks (ARCHITECTURE.md §5).
///
///   <dir>/<account>/<name>.manifest   the sealed manifest (see manifest.hpp)
///   <dir>/.lock                       held (flock) while a process has the store open
///
/// Chunks live in a chunk_store shared by all images and are reference
/// counted in memory; the counts are rebuilt from the manifests at open, so
/// the manifests on disk are the only truth and nothing else needs to be
/// crash-consistent.
///
/// Garbage collection (CS-3) stays safe when the process is killed at any
/// point because of three orderings:
///  - an ingest pins every chunk it is about to reference before it checks
///    whether the store has it, and unpins only after its manifest is
///    written and counted: GC never removes a chunk an ingest relies on;
///  - chunks are synced (one chunk_store::sync()) before the manifest that
///    references them is written atomically and durably: a manifest never
///    names a chunk that a crash could lose (CS-2);
///  - GC lists the chunk store itself and removes a chunk only when, under
///    the store's lock, no manifest counts it and no ingest or read pins it:
///    chunks of an ingest that was killed are collected too.
/// A manifest that can not be opened (corrupt, or its account key fails)
/// suspends garbage collection, since its chunks are unknown.

#include "nimbus/storage/chunk.hpp"
#include "nimbus/storage/key_store.hpp"
#include "nimbus/storage/manifest.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nimbus::storage {

/// What an ingest stored.
struct image_info {
  /// Image bytes and chunks.
  uint64_t size = 0, chunks = 0;
  /// Chunks (and their sealed bytes) that the store did not have before.
  uint64_t new_chunks = 0, new_bytes = 0;
};

/// Totals over every image.
struct store_stats {
  /// Readable manifests, distinct chunks they reference and those chunks'
  /// sealed bytes (each counted once however many images share it).
  uint64_t images = 0, chunks = 0, chunk_bytes = 0;
};

/// Named, reference-counted images over a chunk store. Thread-safe.
class image_store {
public:
  /// Opens the image store in `dir` (created if needed) and rebuilds the
  /// chunk reference counts from every manifest. Fails when another process
  /// has it open.
  static std::unique_ptr<image_store> open(std::string dir, std::shared_ptr<chunk_store> chunks,
                                           std::shared_ptr<key_store> keys,
                                           convergence_domain domain, std::string& error);

  ~image_store();
  image_store(const image_store&) = delete;
  image_store& operator=(const image_store&) = delete;

  /// Stores the file at `path` as image `name` of `account`, replacing any
  /// image of that name. Reads the file once in chunk_size pieces.
  std::string put_file(const std::string& account, const std::string& name,
                       const std::string& path, image_info& out);

  /// Stores `data` as image `name` of `account` (see put_file).
  std::string put_bytes(const std::string& account, const std::string& name,
                        std::string_view data, image_info& out);

  /// Reads and opens an image's manifest.
  std::string manifest(const std::string& account, const std::string& name, image_manifest& out);

  /// True when the image exists.
  bool exists(const std::string& account, const std::string& name);

  /// Removes an image durably; its chunks become garbage unless shared.
  std::string remove(const std::string& account, const std::string& name);

  /// Removes every stored chunk that no manifest references and nobody pins.
  std::string collect_garbage(uint64_t& removed);

  /// Reads a whole image, verifying every chunk (CS-2).
  std::string read_image(const std::string& account, const std::string& name, std::string& out);

  /// Writes an image to `dest_path` chunk by chunk, verifying each; the file
  /// appears under its name only when complete (not fsynced: it is a copy).
  std::string copy_image(const std::string& account, const std::string& name,
                         const std::string& dest_path);

  /// The account's image names, sorted.
  std::vector<std::string> names(const std::string& account);

  store_stats stats();

  std::shared_ptr<chunk_store> chunks() const;
  std::shared_ptr<key_store> keys() const;

  /// [a-z0-9._-]{1,160}.
  static bool valid_name(const std::string& name);
  /// Twelve digits, like an AWS account id.
  static bool valid_account(const std::string& account);

private:
  struct chunk_count {
    uint64_t refs = 0;
    uint32_t sealed_size = 0;
  };
  // What the index keeps of a manifest: no chunk keys.
  struct stored_chunk {
    chunk_id id{};
    uint32_t size = 0;
  };
  class pin_set;
  // Sets its argument to the image's next piece of at most chunk_size bytes
  // (empty at the end); returns an error text.
  using piece_reader = std::function<std::string(std::string_view&)>;

  image_store(std::string dir, std::shared_ptr<chunk_store> chunks,
              std::shared_ptr<key_store> keys, convergence_domain domain, int lock_fd);
  static std::vector<stored_chunk> index_of(const image_manifest& m);
  std::string load();
  std::string ingest(const std::string& account, const std::string& name, const piece_reader& next,
                     image_info& out);
  std::string pin_manifest(const std::string& account, const std::string& name,
                           image_manifest& out, pin_set& pins);
  std::string path_of(const std::string& account, const std::string& name) const;
  void count(const std::vector<stored_chunk>& chunks, bool add);

  std::string dir_;
  std::shared_ptr<chunk_store> chunks_;
  std::shared_ptr<key_store> keys_;
  convergence_domain domain_;
  int lock_fd_;

  std::mutex mutex_;
  // Guarded by mutex_: chunk ids of every readable image ("account/name"),
  // reference counts, pins of ingests and reads in progress, and images
  // whose manifest could not be opened.
  std::map<std::string, std::vector<stored_chunk>> images_;
  std::unordered_map<chunk_id, chunk_count, chunk_id_hash> counts_;
  std::unordered_map<chunk_id, uint32_t, chunk_id_hash> pins_;
  std::set<std::string> unreadable_;
};

} // namespace nimbus::storage
