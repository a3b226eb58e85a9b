#pragma once

/// A directory into which hostile archives (function zips, container layers)
/// are unpacked before they are flattened into an image.
///
/// Archive entries name paths chosen by a tenant: absolute paths, "..",
/// symbolic links that point anywhere, links through links. Every path the
/// tree touches is resolved with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
/// | RESOLVE_NO_XDEV) relative to the tree's root, so the kernel treats the
/// root as "/" for the whole walk: "..", absolute symlink targets and chains
/// of symlinks all stay inside, and no write can land outside the tree. The
/// final component of a path is always handled with *at() calls that never
/// follow it (O_NOFOLLOW, O_EXCL, AT_SYMLINK_NOFOLLOW).
///
/// The tree holds only what an image needs: regular files (mode normalised to
/// 0755 if any execute bit is set, else 0644; setuid, setgid and sticky bits
/// dropped), directories (0755) and symbolic links (target text stored as it
/// is; it is only followed inside the image at run time), plus hard links
/// between its own entries. Devices, fifos and sockets have no operation: the
/// archive readers drop them. Ownership and timestamps are not kept; the
/// image builder fixes them.
///
/// Bounds: the bytes written (counted as written, so content later replaced
/// still counts: the bound is on work and disk, not only on the result) and
/// the number of entries created. Paths are at most max_path_length bytes and
/// max_path_depth components, so that mkfs.erofs (PATH_MAX) and the
/// descriptor-per-level removal always work.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace nimbus::storage {

/// Reads the next piece of a file's content into `buffer` (at most
/// `capacity` bytes). Returns the number of bytes read, 0 at the end, or -1
/// when the source failed.
using content_reader = std::function<int64_t(char* buffer, size_t capacity)>;

/// Decides, during clear_directory(), whether the entry at a (normalised,
/// root-relative) path is kept: a kept directory is searched further, a
/// dropped entry is removed with everything below it.
using keep_predicate = std::function<bool(const std::string& path)>;

/// What adding an entry does when its path exists already.
enum class on_conflict {
  /// The new entry replaces the old one (container layers). A directory added
  /// onto a directory merges with it.
  replace,
  /// The entry is refused (zips: an order-independent result needs unique
  /// names). A directory added onto a directory is still fine.
  refuse,
};

/// Longest entry path (bytes, after normalisation) a tree accepts.
inline constexpr size_t max_path_length = 3072;
/// Most components an entry path may have.
inline constexpr size_t max_path_depth = 256;

/// Normalises an archive entry path to root-relative form ("a/b/c"): leading
/// slashes, empty and "." components are dropped. Returns false (and leaves
/// `out` unspecified) if the path has a ".." component, a NUL byte, or is too
/// long or too deep. The root itself normalises to "".
bool normalise_entry_path(std::string_view path, std::string& out);

/// A staging directory with bounded, contained write operations. Not thread
/// safe; one archive is unpacked by one thread.
class staging_tree {
public:
  /// Creates the directory `root` (it must not exist; its parent must) and
  /// returns a tree on it, or nullptr with `error` set. `max_bytes` bounds
  /// the content written, `max_entries` the entries created.
  static std::unique_ptr<staging_tree> create(const std::string& root, uint64_t max_bytes,
                                              uint64_t max_entries, on_conflict policy,
                                              std::string& error);

  /// Closes the tree. The directory stays on disk: call destroy() to remove it.
  ~staging_tree();

  staging_tree(const staging_tree&) = delete;
  staging_tree& operator=(const staging_tree&) = delete;

  /// The tree's directory as given to create().
  const std::string& root() const {
    return root_;
  }

  /// Adds a regular file whose content is streamed from `read`. Only the
  /// execute bits of `mode` matter (see the file comment). Missing parent
  /// directories are created. Returns an error text, empty on success; on
  /// failure no partial file is left.
  std::string add_file(std::string_view path, uint32_t mode, const content_reader& read);

  /// Adds a directory (mode 0755), and any missing parents.
  std::string add_directory(std::string_view path);

  /// Adds a symbolic link whose target text is stored as it is.
  std::string add_symlink(std::string_view path, std::string_view target);

  /// Adds a hard link at `path` to the existing non-directory entry
  /// `existing`, both resolved inside the tree. Falls back to a copy when
  /// the file system refuses the link (too many links).
  std::string add_hard_link(std::string_view path, std::string_view existing);

  /// Removes the entry at `path` and everything below it (a whiteout).
  /// Intermediate symlinks resolve inside the tree; the entry itself is never
  /// followed. A missing entry is not an error.
  std::string remove(std::string_view path);

  /// Removes the content of the directory at `path` (an opaque whiteout),
  /// except the entries `keep` accepts (nullptr: keep nothing). A missing
  /// directory, or a path that is not a directory, is not an error.
  std::string clear_directory(std::string_view path, const keep_predicate& keep = nullptr);

  /// Removes the whole tree from disk (also after a failure) and closes it.
  /// Returns an error text, empty on success.
  std::string destroy();

  /// Content bytes written so far.
  uint64_t bytes_written() const {
    return bytes_;
  }

  /// Entries created so far (files, directories, links).
  uint64_t entries_created() const {
    return entries_;
  }

private:
  staging_tree(std::string root, int root_fd, uint64_t max_bytes, uint64_t max_entries,
               on_conflict policy);

  struct located;
  std::string locate(std::string_view path, bool create_parents, located& out);
  int open_dir(const std::string& rel, bool nofollow_last, int& err) const;
  std::string count_entry(const std::string& rel);
  std::string make_room(int parent_fd, const std::string& name, const std::string& rel);
  std::string write_content(int fd, const std::string& rel, const content_reader& read);
  std::string prune(int dir_fd, const std::string& rel, const keep_predicate& keep);

  std::string root_;
  int root_fd_ = -1;
  uint64_t max_bytes_;
  uint64_t max_entries_;
  on_conflict policy_;
  uint64_t bytes_ = 0;
  uint64_t entries_ = 0;
  std::unique_ptr<char[]> buffer_;
};

/// A private directory `<work_dir>/<prefix>-XXXXXX` holding one staging
/// tree; removed, with the tree, when it goes out of scope.
class staging_area {
public:
  /// Creates the directory and its tree; returns an error text.
  std::string open(const std::string& work_dir, const std::string& prefix, uint64_t max_bytes,
                   uint64_t max_entries, on_conflict policy);
  ~staging_area();
  staging_tree& tree() {
    return *tree_;
  }

private:
  std::string dir_;
  std::unique_ptr<staging_tree> tree_;
};

} // namespace nimbus::storage
