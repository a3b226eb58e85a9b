#pragma once

/// The code store: what the registry and the worker see of code storage.
///
/// It ties flattening (image_builder, container_archive) to the chunked,
/// encrypted image store. Names of stored images, per account:
///
///   zip-<hex>   the erofs image flattened from a zip (hex: the zip's SHA-256)
///   src-<hex>   the original zip, served again by GetFunction's Code.Location
///   oci-<hex>   a pushed container image (hex: its config digest)
///
/// Pushed images are named by repository and tag in
/// `<dir>/repositories/<account>.json`; an ImageUri resolves through it.
/// Thread-safe: the registry, the code builders and the worker share one.

#include "nimbus/storage/chunk.hpp"
#include "nimbus/storage/container_archive.hpp"
#include "nimbus/storage/image_builder.hpp"
#include "nimbus/storage/image_store.hpp"
#include "nimbus/storage/key_store.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::storage {

/// Settings of the code store.
struct code_store_options {
  /// Root directory (data_dir/code).
  std::string dir;
  /// "account" or "global".
  std::string convergence_domain = "account";
  /// Empty: <dir>/keys/master.key.
  std::string master_key_file;
  /// Bounds for flattening container images.
  flatten_limits limits;
  /// Most bytes a zip may unpack to (Lambda: 250 MB), whatever its headers
  /// claim: flattening stops there.
  uint64_t zip_unpacked_bytes = 250ull << 20;
};

/// A zip stored as an image.
struct stored_zip {
  /// Hex SHA-256 of the zip.
  std::string sha256_hex;
  /// Base64 SHA-256 of the zip (CodeSha256).
  std::string sha256_base64;
  /// Name of the flattened image ("zip-<hex>").
  std::string image;
  uint64_t zip_bytes = 0;
  uint64_t image_bytes = 0;
  /// Chunks the store did not have before.
  uint64_t new_chunks = 0;
};

/// A pushed container image, as a repository tag names it.
struct pushed_image {
  std::string repository;
  std::string tag;
  /// "sha256:<hex>" of the image config.
  std::string digest;
  /// Name of the stored image ("oci-<hex>").
  std::string image;
  container_config config;
  uint64_t image_bytes = 0;
  uint64_t new_chunks = 0;
};

class code_store {
public:
  static std::unique_ptr<code_store> open(const code_store_options& options, std::string& error);

  /// Flattens and stores a zip (a no-op when the account has it already).
  /// Errors that start with "invalid:" are the caller's fault (bad zip).
  std::string store_zip(const std::string& account, std::string_view zip, stored_zip& out);

  /// Reads the original zip back.
  std::string read_zip(const std::string& account, const std::string& sha256_hex,
                       std::string& out);

  /// Removes a zip and its image; their chunks go at the next GC.
  std::string remove_zip(const std::string& account, const std::string& sha256_hex);

  /// Flattens a container image archive (docker save or OCI layout) from a
  /// file, stores it and tags it `repository:tag` in the account.
  /// Errors that start with "invalid:" are the caller's fault.
  std::string push_image(const std::string& account, const std::string& archive_path,
                         const std::string& repository, const std::string& tag,
                         pushed_image& out);

  /// Finds a pushed image by tag or by digest ("sha256:<hex>").
  std::string resolve_image(const std::string& account, const std::string& repository,
                            const std::string& tag_or_digest, pushed_image& out);

  /// Deletes chunks nothing references; returns how many.
  uint64_t collect_garbage();

  /// The underlying image store (the worker reads manifests from it).
  image_store& images();
  std::shared_ptr<chunk_store> chunks() const;

  /// Counters for /metrics.
  struct counters {
    uint64_t zips_stored = 0;
    uint64_t zips_deduplicated = 0;
    uint64_t images_pushed = 0;
    uint64_t chunks_written = 0;
    uint64_t chunks_collected = 0;
  };
  counters stats() const;

private:
  code_store() = default;
  std::string load_repositories(const std::string& account);
  std::string save_repositories(const std::string& account);

  code_store_options options_;
  std::unique_ptr<image_store> images_;
  mutable std::mutex mutex_;
  /// account -> "repo:tag" -> image; loaded on first use.
  std::map<std::string, std::map<std::string, pushed_image>> repositories_;
  counters counters_;
};

} // namespace nimbus::storage
