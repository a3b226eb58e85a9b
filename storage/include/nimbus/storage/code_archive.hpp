#pragma once

/// Validation of function code archives (zip) before they are stored.
///
/// Tenant code is hostile: an archive is rejected when any entry could escape
/// the directory it is unpacked into ("zip slip"): absolute paths, ".."
/// components, backslashes (read as separators by some tools), NUL bytes, and
/// symbolic links that are absolute or resolve outside the archive root. The
/// declared unpacked size is bounded to stop zip bombs.

#include <cstdint>
#include <string>
#include <string_view>

namespace nimbus::storage {

/// The result of checking an archive.
struct archive_report {
  /// True if the archive may be stored.
  bool ok = false;
  /// Why not, naming the offending entry (safe to show to the caller).
  std::string error;
  /// Sum of the declared uncompressed sizes.
  uint64_t unzipped_size = 0;
  /// Number of entries.
  uint64_t entries = 0;
};

/// Checks a zip archive held in memory.
archive_report check_zip(std::string_view bytes, uint64_t max_unzipped_size);

} // namespace nimbus::storage

namespace nimbus::storage {

class staging_tree;

/// Unpacks a zip held in memory into `directory`, which must not exist yet
/// (it is created). Entries are checked as check_zip() does and written
/// through a staging_tree (so no write can leave the directory, whatever
/// chain of symbolic links the archive holds): files readable by everyone
/// and executable where the archive says so; names must be unique; entries
/// are applied in sorted order with symbolic links last, so no entry is
/// written through a link of the archive. Returns an error text, empty on
/// success; on failure nothing is left.
std::string extract_zip(std::string_view bytes, const std::string& directory,
                        uint64_t max_unzipped_size);

/// Unpacks a zip held in memory into `tree`, as extract_zip() describes.
/// The tree's limits bound the work. Returns an error text, empty on success.
std::string unpack_zip(std::string_view bytes, staging_tree& tree);

/// unpack_zip() for a zip file on disk (read as needed, not loaded whole).
std::string unpack_zip_file(const std::string& zip_path, staging_tree& tree);

} // namespace nimbus::storage
