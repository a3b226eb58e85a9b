#pragma once

/// Deterministic flattening of function code into read-only erofs images
/// (ARCHITECTURE.md §5).
///
/// The same input must give the same image bytes, byte for byte, so that
/// images cut into 512 KiB chunks deduplicate across uploads, accounts' own
/// re-uploads and nodes. What could vary is fixed:
/// - the tree: archives are unpacked through a staging_tree (modes
///   normalised, owners and timestamps not kept, zip entries applied in
///   sorted order, duplicate names refused);
/// - mkfs.erofs: run with an empty environment (SOURCE_DATE_EPOCH and locale
///   change its output), `-T0` (every inode and the superblock get time 0),
///   a fixed `-U` uuid, `--all-root`, `-x-1` (no xattrs, so neither the
///   staging file system nor SELinux labels leak in) and `-Enoinline_data`
///   (file data always starts on a block of its own instead of being packed
///   into the inode area, so a file's data does not move when a small file
///   elsewhere changes within its block count). mkfs.erofs 1.5 walks
///   directories in sorted order, so the staging path and readdir order do
///   not matter.
///
/// Caveat of mkfs.erofs 1.5: entries whose name starts with "lost+found" are
/// skipped by mkfs and do not appear in the image.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace nimbus::storage {

/// Bounds on what one archive may unpack to.
struct flatten_limits {
  /// Content bytes written into the staging tree.
  uint64_t max_bytes = 10ull << 30;
  /// Files, directories and links created.
  uint64_t max_entries = 1'000'000;
};

/// The filesystem UUID written into every image.
inline constexpr const char* image_uuid = "6e696d62-7573-4000-8000-000000000001";

/// Builds an erofs image of `tree_dir` at `image_path` (replaced if it
/// exists; written to a temporary file beside it and renamed). Runs
/// mkfs.erofs without a shell and with an empty environment, and kills it
/// after `timeout`. Returns an error text (with mkfs.erofs's own message),
/// empty on success.
std::string build_erofs(const std::string& tree_dir, const std::string& image_path,
                        std::chrono::seconds timeout);

/// build_erofs() with a generous timeout (one hour: a 10 GB tree takes a few
/// minutes).
std::string build_erofs(const std::string& tree_dir, const std::string& image_path);

/// Flattens the zip file at `zip_path` into the image `image_path`: unpacks
/// it into a private staging tree under `work_dir` (checked as check_zip()
/// does; names must be unique; applied in sorted order, symbolic links
/// last), builds the image and removes the staging tree. Returns an error
/// text, empty on success.
std::string flatten_zip(const std::string& zip_path, const std::string& work_dir,
                        const std::string& image_path, const flatten_limits& limits);

/// flatten_zip() for a zip held in memory. (A `std::string` argument picks the
/// path overload; pass a `std::string_view` for bytes.)
std::string flatten_zip(std::string_view zip_bytes, const std::string& work_dir,
                        const std::string& image_path, const flatten_limits& limits);

} // namespace nimbus::storage
