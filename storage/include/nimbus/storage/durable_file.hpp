#pragma once

/// Crash-safe file operations on POSIX file systems.
///
/// A write is durable only when the data and the directory entry that names it
/// are both on disk: write_file_atomic() writes a temporary file in the target
/// directory, fsyncs it, renames it over the target and fsyncs the directory,
/// so that after a crash the target holds either the old or the new content,
/// never a mix. An fsync error is reported and never retried on the same file
/// descriptor (the kernel may have dropped the dirty pages already).

#include <string>
#include <string_view>
#include <vector>

namespace nimbus::storage {

/// The outcome of a file operation: `ok()` or what failed and why.
struct io_status {
  /// Empty on success; otherwise "<step> <path>: <strerror>".
  std::string error;
  bool ok() const {
    return error.empty();
  }
};

/// Suffix marking temporary files; leftovers are removed at startup.
inline constexpr std::string_view temp_suffix = ".nimbus-tmp";

/// Writes `data` to `path` atomically and durably (see file comment).
io_status write_file_atomic(const std::string& path, std::string_view data);

/// Reads a whole file.
io_status read_file(const std::string& path, std::string& out);

/// Reads from `fd` into `data` until `size` bytes or the end of the file,
/// across short reads and EINTR. Returns the bytes read, or -1 with errno set.
long read_full(int fd, char* data, size_t size);

/// Removes `path` and fsyncs its directory. A missing file is not an error.
io_status remove_file_durable(const std::string& path);

/// Creates `path` and missing parents, fsyncing each new directory's parent.
io_status make_directories(const std::string& path);

/// Fsyncs a directory so that entries created, renamed or removed in it are
/// durable.
io_status fsync_directory(const std::string& path);

/// Lists the names of the entries of a directory (not "." or "..").
io_status list_directory(const std::string& path, std::vector<std::string>& names);

} // namespace nimbus::storage
