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

/// Unpacks a zip held in memory into `directory`, which must not exist yet
/// (it is created). Entries are checked as check_zip() does; files are
/// created without following symlinks, readable by everyone and executable
/// where the archive says so; symbolic links must stay inside the directory.
/// Returns an error text, empty on success; on failure nothing is left.
std::string extract_zip(std::string_view bytes, const std::string& directory,
                        uint64_t max_unzipped_size);

} // namespace nimbus::storage
