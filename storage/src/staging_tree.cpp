#include "nimbus/storage/staging_tree.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace nimbus::storage {

namespace {

constexpr size_t buffer_size = 128 * 1024;
constexpr size_t max_root_length = 900;
constexpr size_t max_link_target = 4095;

// Closes a file descriptor when it goes out of scope.
class fd_guard {
public:
  explicit fd_guard(int fd = -1) : fd_{fd} {
  }
  ~fd_guard() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const {
    return fd_;
  }
  void reset(int fd) {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = fd;
  }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

private:
  int fd_;
};

// openat2 with the tree's resolution rules. RESOLVE_IN_ROOT makes the kernel
// treat `root_fd` as "/" for the whole walk, so "..", absolute symlink
// targets and symlink chains cannot leave it; RESOLVE_NO_MAGICLINKS refuses
// /proc-style links that jump anywhere; RESOLVE_NO_XDEV refuses mount points
// (none should exist in a private staging directory). glibc 2.36 has no
// wrapper, so this is the raw system call (Linux 5.6+).
int open_in_root(int root_fd, const char* path, uint64_t flags) {
  open_how how{};
  how.flags = flags;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  return static_cast<int>(::syscall(SYS_openat2, root_fd, path, &how, sizeof how));
}

// An entry path quoted for an error text, clipped so that a hostile 3 KiB
// name does not flood logs.
std::string quote(const std::string& rel) {
  std::string shown = rel.size() > 200 ? rel.substr(0, 200) + "..." : rel;
  for (auto& c : shown)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      c = '?';
  return "'" + shown + "'";
}

std::string failure(const char* step, const std::string& rel, int err) {
  return std::string{step} + " " + quote(rel) + ": " + std::strerror(err);
}

// Names of the entries of an open directory (without "." and ".."). Read in
// full before anything is removed, so removal never races the iteration.
int list_directory(int dir_fd, std::vector<std::string>& names) {
  int copy = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (copy < 0)
    return errno;
  DIR* dir = ::fdopendir(copy);
  if (dir == nullptr) {
    int err = errno;
    ::close(copy);
    return err;
  }
  errno = 0;
  while (auto* entry = ::readdir(dir)) {
    if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0)
      names.emplace_back(entry->d_name);
    errno = 0;
  }
  int err = errno;
  ::closedir(dir);
  return err;
}

// Removes the entry `name` of `dir_fd` and everything below it, never
// following a symlink. Returns 0 or an errno value; a missing entry is fine.
int remove_at(int dir_fd, const std::string& name) {
  struct stat st {};
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return errno == ENOENT ? 0 : errno;
  if (!S_ISDIR(st.st_mode))
    return ::unlinkat(dir_fd, name.c_str(), 0) == 0 || errno == ENOENT ? 0 : errno;
  fd_guard sub{::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
  if (sub.get() < 0)
    return errno;
  std::vector<std::string> names;
  if (int err = list_directory(sub.get(), names))
    return err;
  for (const auto& child : names)
    if (int err = remove_at(sub.get(), child))
      return err;
  sub.reset(-1);
  return ::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT ? 0 : errno;
}

bool all_zero(const char* p, size_t n) {
  // Compare word-sized pieces; content buffers are large.
  size_t i = 0;
  for (; i + sizeof(uint64_t) <= n; i += sizeof(uint64_t)) {
    uint64_t w;
    std::memcpy(&w, p + i, sizeof w);
    if (w != 0)
      return false;
  }
  for (; i < n; ++i)
    if (p[i] != 0)
      return false;
  return true;
}

void split_parent(const std::string& rel, std::string& parent, std::string& name) {
  auto slash = rel.rfind('/');
  if (slash == std::string::npos) {
    parent.clear();
    name = rel;
  } else {
    parent = rel.substr(0, slash);
    name = rel.substr(slash + 1);
  }
}

} // namespace

bool normalise_entry_path(std::string_view path, std::string& out) {
  out.clear();
  if (path.find('\0') != std::string_view::npos)
    return false;
  size_t depth = 0;
  while (!path.empty()) {
    auto slash = path.find('/');
    auto part = path.substr(0, slash);
    if (part == "..")
      return false;
    if (!part.empty() && part != ".") {
      if (!out.empty())
        out += '/';
      out.append(part);
      if (++depth > max_path_depth || out.size() > max_path_length)
        return false;
    }
    if (slash == std::string_view::npos)
      break;
    path.remove_prefix(slash + 1);
  }
  return true;
}

// A normalised entry path split into its parent directory (open, resolved
// inside the root) and its last component.
struct staging_tree::located {
  std::string rel;
  std::string name;
  fd_guard parent;
};

staging_tree::staging_tree(std::string root, int root_fd, uint64_t max_bytes,
                           uint64_t max_entries, on_conflict policy)
  : root_{std::move(root)},
    root_fd_{root_fd},
    max_bytes_{max_bytes},
    max_entries_{max_entries},
    policy_{policy},
    buffer_{new char[buffer_size]} {
}

staging_tree::~staging_tree() {
  if (root_fd_ >= 0)
    ::close(root_fd_);
}

std::unique_ptr<staging_tree> staging_tree::create(const std::string& root, uint64_t max_bytes,
                                                   uint64_t max_entries, on_conflict policy,
                                                   std::string& error) {
  if (root.empty() || root.size() > max_root_length) {
    error = "the staging directory path is empty or too long";
    return nullptr;
  }
  if (::mkdir(root.c_str(), 0700) != 0) {
    error = "cannot create the staging directory " + root + ": " + std::strerror(errno);
    return nullptr;
  }
  int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    error = "cannot open the staging directory " + root + ": " + std::strerror(errno);
    ::rmdir(root.c_str());
    return nullptr;
  }
  // Fixed mode whatever the umask: the mode is part of the image.
  ::fchmod(fd, 0755);
  int probe = open_in_root(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (probe < 0) {
    int err = errno;
    ::close(fd);
    ::rmdir(root.c_str());
    error = err == ENOSYS ? "openat2 is not available (Linux 5.6 or later is needed)"
                          : std::string{"openat2 failed: "} + std::strerror(err);
    return nullptr;
  }
  ::close(probe);
  return std::unique_ptr<staging_tree>{
    new staging_tree(root, fd, max_bytes, max_entries, policy)};
}

int staging_tree::open_dir(const std::string& rel, bool nofollow_last, int& err) const {
  uint64_t flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (nofollow_last ? O_NOFOLLOW : 0);
  int fd = open_in_root(root_fd_, rel.empty() ? "." : rel.c_str(), flags);
  err = fd < 0 ? errno : 0;
  return fd;
}

std::string staging_tree::count_entry(const std::string& rel) {
  if (entries_ + 1 > max_entries_)
    return "entry " + quote(rel) + " exceeds the entry limit (" + std::to_string(max_entries_)
           + " entries)";
  ++entries_;
  return {};
}

std::string staging_tree::locate(std::string_view path, bool create_parents, located& out) {
  if (!normalise_entry_path(path, out.rel))
    return "entry " + quote(std::string{path})
           + " has a '..' component, a NUL byte, or is too long or too deep";
  if (out.rel.empty())
    return "entry " + quote(std::string{path}) + " names the root";
  std::string parent;
  split_parent(out.rel, parent, out.name);
  int err = 0;
  int fd = open_dir(parent, false, err);
  if (fd >= 0) {
    out.parent.reset(fd);
    return {};
  }
  if (!create_parents || err != ENOENT)
    return failure("cannot open the parent directory of", out.rel, err);
  // Some parent is missing: walk down from the root, resolving each prefix
  // inside the root (it may pass through symlinks) and creating what is
  // missing inside the directory that was resolved one step earlier.
  fd_guard current{::dup(root_fd_)};
  std::string prefix;
  std::string_view rest = parent;
  while (!rest.empty()) {
    auto slash = rest.find('/');
    std::string component{rest.substr(0, slash)};
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
    prefix += prefix.empty() ? component : "/" + component;
    int next = open_dir(prefix, false, err);
    if (next < 0 && err == ENOENT) {
      if (auto problem = count_entry(prefix); !problem.empty())
        return problem;
      if (::mkdirat(current.get(), component.c_str(), 0755) != 0)
        return failure("cannot create directory", prefix, errno);
      next = ::openat(current.get(), component.c_str(),
                      O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (next < 0)
        return failure("cannot open directory", prefix, errno);
      ::fchmod(next, 0755);
    }
    if (next < 0)
      return failure("cannot open directory", prefix, err);
    current.reset(next);
  }
  out.parent.reset(current.release());
  return {};
}

std::string staging_tree::make_room(int parent_fd, const std::string& name,
                                    const std::string& rel) {
  struct stat st {};
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT)
      return {};
    return failure("cannot inspect", rel, errno);
  }
  if (policy_ == on_conflict::refuse)
    return "entry " + quote(rel) + " conflicts with an earlier entry";
  if (int err = remove_at(parent_fd, name))
    return failure("cannot replace", rel, err);
  return {};
}

std::string staging_tree::write_content(int fd, const std::string& rel,
                                        const content_reader& read) {
  uint64_t size = 0;
  bool hole_at_end = false;
  for (;;) {
    int64_t n = read(buffer_.get(), buffer_size);
    if (n < 0)
      return "cannot read the content of entry " + quote(rel);
    if (n == 0)
      break;
    auto count = static_cast<uint64_t>(n);
    if (count > buffer_size)
      return "cannot read the content of entry " + quote(rel);
    if (bytes_ + count > max_bytes_)
      return "entry " + quote(rel) + " exceeds the unpacked size limit ("
             + std::to_string(max_bytes_) + " bytes)";
    bytes_ += count;
    size += count;
    // Runs of zeros become holes: big zero-filled files (sparse layers,
    // padding) cost no disk in the tree. mkfs.erofs reads them as zeros.
    if (all_zero(buffer_.get(), count)) {
      if (::lseek(fd, static_cast<off_t>(count), SEEK_CUR) < 0)
        return failure("cannot write", rel, errno);
      hole_at_end = true;
      continue;
    }
    hole_at_end = false;
    size_t done = 0;
    while (done < count) {
      auto w = ::write(fd, buffer_.get() + done, count - done);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        return failure("cannot write", rel, w < 0 ? errno : EIO);
      done += static_cast<size_t>(w);
    }
  }
  if (hole_at_end && ::ftruncate(fd, static_cast<off_t>(size)) != 0)
    return failure("cannot write", rel, errno);
  return {};
}

std::string staging_tree::add_file(std::string_view path, uint32_t mode,
                                   const content_reader& read) {
  located at;
  if (auto problem = locate(path, true, at); !problem.empty())
    return problem;
  if (auto problem = make_room(at.parent.get(), at.name, at.rel); !problem.empty())
    return problem;
  if (auto problem = count_entry(at.rel); !problem.empty())
    return problem;
  // O_EXCL and O_NOFOLLOW: the slot was just emptied; never write through a
  // link that might have appeared there.
  fd_guard fd{::openat(at.parent.get(), at.name.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)};
  if (fd.get() < 0)
    return failure("cannot create", at.rel, errno);
  auto problem = write_content(fd.get(), at.rel, read);
  if (problem.empty() && ::fchmod(fd.get(), (mode & 0111) ? 0755 : 0644) != 0)
    problem = failure("cannot set the mode of", at.rel, errno);
  if (!problem.empty())
    ::unlinkat(at.parent.get(), at.name.c_str(), 0);
  return problem;
}

std::string staging_tree::add_directory(std::string_view path) {
  std::string rel;
  if (!normalise_entry_path(path, rel))
    return "entry " + quote(std::string{path})
           + " has a '..' component, a NUL byte, or is too long or too deep";
  if (rel.empty())
    return ::fchmod(root_fd_, 0755) == 0 ? std::string{} : failure("cannot chmod", rel, errno);
  located at;
  if (auto problem = locate(path, true, at); !problem.empty())
    return problem;
  struct stat st {};
  if (::fstatat(at.parent.get(), at.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0
      && S_ISDIR(st.st_mode)) {
    // A directory onto a directory merges (layers; "a/" after "a/b" in a zip).
    fd_guard dir{::openat(at.parent.get(), at.name.c_str(),
                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
    if (dir.get() < 0 || ::fchmod(dir.get(), 0755) != 0)
      return failure("cannot open directory", at.rel, errno);
    return {};
  }
  if (auto problem = make_room(at.parent.get(), at.name, at.rel); !problem.empty())
    return problem;
  if (auto problem = count_entry(at.rel); !problem.empty())
    return problem;
  if (::mkdirat(at.parent.get(), at.name.c_str(), 0755) != 0)
    return failure("cannot create directory", at.rel, errno);
  fd_guard dir{::openat(at.parent.get(), at.name.c_str(),
                        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
  if (dir.get() < 0 || ::fchmod(dir.get(), 0755) != 0)
    return failure("cannot open directory", at.rel, errno);
  return {};
}

std::string staging_tree::add_symlink(std::string_view path, std::string_view target) {
  located at;
  if (auto problem = locate(path, true, at); !problem.empty())
    return problem;
  if (target.empty() || target.size() > max_link_target
      || target.find('\0') != std::string_view::npos)
    return "symbolic link " + quote(at.rel) + " has an empty, too long or invalid target";
  if (auto problem = make_room(at.parent.get(), at.name, at.rel); !problem.empty())
    return problem;
  if (auto problem = count_entry(at.rel); !problem.empty())
    return problem;
  std::string text{target};
  if (::symlinkat(text.c_str(), at.parent.get(), at.name.c_str()) != 0)
    return failure("cannot create symbolic link", at.rel, errno);
  return {};
}

std::string staging_tree::add_hard_link(std::string_view path, std::string_view existing) {
  located from;
  if (auto problem = locate(existing, false, from); !problem.empty())
    return "hard link " + quote(std::string{path}) + ": " + problem;
  struct stat st {};
  if (::fstatat(from.parent.get(), from.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return "hard link " + quote(std::string{path}) + " points to " + quote(from.rel)
           + ", which does not exist";
  if (S_ISDIR(st.st_mode))
    return "hard link " + quote(std::string{path}) + " points to a directory";
  located at;
  if (auto problem = locate(path, true, at); !problem.empty())
    return problem;
  if (at.rel == from.rel)
    return "hard link " + quote(at.rel) + " points to itself";
  if (auto problem = make_room(at.parent.get(), at.name, at.rel); !problem.empty())
    return problem;
  if (auto problem = count_entry(at.rel); !problem.empty())
    return problem;
  // Flags 0: linkat never follows the old path's last component, so a link to
  // a symlink links the symlink itself, as tar means it.
  if (::linkat(from.parent.get(), from.name.c_str(), at.parent.get(), at.name.c_str(), 0) == 0)
    return {};
  int err = errno;
  if (err != EMLINK && err != EPERM)
    return failure("cannot create hard link", at.rel, err);
  // The file system refuses another link: store a copy instead.
  if (S_ISLNK(st.st_mode)) {
    std::string target(max_link_target + 1, '\0');
    auto n = ::readlinkat(from.parent.get(), from.name.c_str(), target.data(), target.size());
    if (n <= 0 || static_cast<size_t>(n) > max_link_target)
      return failure("cannot copy symbolic link", from.rel, errno);
    target.resize(static_cast<size_t>(n));
    if (::symlinkat(target.c_str(), at.parent.get(), at.name.c_str()) != 0)
      return failure("cannot create symbolic link", at.rel, errno);
    return {};
  }
  fd_guard source{::openat(from.parent.get(), from.name.c_str(),
                           O_RDONLY | O_NOFOLLOW | O_CLOEXEC)};
  if (source.get() < 0)
    return failure("cannot open", from.rel, errno);
  fd_guard fd{::openat(at.parent.get(), at.name.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)};
  if (fd.get() < 0)
    return failure("cannot create", at.rel, errno);
  int source_fd = source.get();
  auto problem = write_content(fd.get(), at.rel, [source_fd](char* buffer, size_t capacity) {
    auto n = ::read(source_fd, buffer, capacity);
    return static_cast<int64_t>(n);
  });
  if (problem.empty() && ::fchmod(fd.get(), (st.st_mode & 0111) ? 0755 : 0644) != 0)
    problem = failure("cannot set the mode of", at.rel, errno);
  if (!problem.empty())
    ::unlinkat(at.parent.get(), at.name.c_str(), 0);
  return problem;
}

std::string staging_tree::remove(std::string_view path) {
  std::string rel;
  if (!normalise_entry_path(path, rel))
    return "entry " + quote(std::string{path})
           + " has a '..' component, a NUL byte, or is too long or too deep";
  if (rel.empty())
    return "the root cannot be removed";
  std::string parent, name;
  split_parent(rel, parent, name);
  int err = 0;
  fd_guard dir{open_dir(parent, false, err)};
  if (dir.get() < 0) {
    // Nothing to remove when a parent is missing or is not a directory.
    if (err == ENOENT || err == ENOTDIR)
      return {};
    return failure("cannot open the parent directory of", rel, err);
  }
  if (int problem = remove_at(dir.get(), name))
    return failure("cannot remove", rel, problem);
  return {};
}

std::string staging_tree::prune(int dir_fd, const std::string& rel, const keep_predicate& keep) {
  std::vector<std::string> names;
  if (int err = list_directory(dir_fd, names))
    return failure("cannot list", rel, err);
  for (const auto& name : names) {
    auto child = rel.empty() ? name : rel + "/" + name;
    if (keep && keep(child)) {
      struct stat st {};
      if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
        return failure("cannot inspect", child, errno);
      if (!S_ISDIR(st.st_mode))
        continue;
      fd_guard sub{
        ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
      if (sub.get() < 0)
        return failure("cannot open directory", child, errno);
      if (auto problem = prune(sub.get(), child, keep); !problem.empty())
        return problem;
      continue;
    }
    if (int err = remove_at(dir_fd, name))
      return failure("cannot remove", child, err);
  }
  return {};
}

std::string staging_tree::clear_directory(std::string_view path, const keep_predicate& keep) {
  std::string rel;
  if (!normalise_entry_path(path, rel))
    return "entry " + quote(std::string{path})
           + " has a '..' component, a NUL byte, or is too long or too deep";
  int err = 0;
  // The directory itself is not followed if it is a symlink: an opaque marker
  // belongs to a real directory of the image.
  fd_guard dir{open_dir(rel, true, err)};
  if (dir.get() < 0) {
    if (err == ENOENT || err == ENOTDIR || err == ELOOP)
      return {};
    return failure("cannot open directory", rel, err);
  }
  return prune(dir.get(), rel, keep);
}

std::string staging_tree::destroy() {
  if (root_fd_ >= 0) {
    ::close(root_fd_);
    root_fd_ = -1;
  }
  auto slash = root_.rfind('/');
  std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : root_.substr(0, slash);
  std::string name = slash == std::string::npos ? root_ : root_.substr(slash + 1);
  fd_guard parent_fd{::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (parent_fd.get() < 0)
    return "cannot open " + parent + ": " + std::strerror(errno);
  if (int err = remove_at(parent_fd.get(), name))
    return "cannot remove " + root_ + ": " + std::strerror(err);
  return {};
}

std::string staging_area::open(const std::string& work_dir, const std::string& prefix,
                               uint64_t max_bytes, uint64_t max_entries, on_conflict policy) {
  std::string pattern = work_dir + "/" + prefix + "-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr)
    return "cannot create a staging directory in " + work_dir + ": " + std::strerror(errno);
  dir_ = pattern;
  std::string error;
  tree_ = staging_tree::create(dir_ + "/tree", max_bytes, max_entries, policy, error);
  return error;
}

staging_area::~staging_area() {
  if (tree_)
    tree_->destroy();
  if (!dir_.empty())
    ::rmdir(dir_.c_str());
}

} // namespace nimbus::storage
