#include "nimbus/storage/durable_file.hpp"

#include "nimbus/storage/digest.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace nimbus::storage {

namespace {

io_status failure(std::string_view step, const std::string& path, int err) {
  return {std::string{step} + " " + path + ": " + std::strerror(err)};
}

std::string parent_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos)
    return ".";
  if (slash == 0)
    return "/";
  return path.substr(0, slash);
}

// Closes a file descriptor when it goes out of scope.
struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

} // namespace

io_status fsync_directory(const std::string& path) {
  fd_guard dir{::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (dir.fd < 0)
    return failure("open", path, errno);
  if (::fsync(dir.fd) != 0)
    return failure("fsync", path, errno);
  return {};
}

io_status write_file_atomic(const std::string& path, std::string_view data) {
  auto temp = path + "." + to_hex(random_bytes(6)) + std::string{temp_suffix};
  {
    fd_guard file{::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)};
    if (file.fd < 0)
      return failure("open", temp, errno);
    size_t done = 0;
    while (done < data.size()) {
      auto n = ::write(file.fd, data.data() + done, data.size() - done);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        auto err = errno;
        ::unlink(temp.c_str());
        return failure("write", temp, err);
      }
      done += static_cast<size_t>(n);
    }
    // The data must be on disk before the rename makes it visible under the
    // final name, or a crash could leave a complete-looking empty file.
    if (::fsync(file.fd) != 0) {
      auto err = errno;
      ::unlink(temp.c_str());
      return failure("fsync", temp, err);
    }
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    auto err = errno;
    ::unlink(temp.c_str());
    return failure("rename", temp, err);
  }
  // The rename itself lives in the directory; fsync it to make it durable.
  return fsync_directory(parent_of(path));
}

io_status read_file(const std::string& path, std::string& out) {
  fd_guard file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0)
    return failure("open", path, errno);
  struct stat st {};
  if (::fstat(file.fd, &st) != 0)
    return failure("stat", path, errno);
  out.resize(static_cast<size_t>(st.st_size));
  auto got = read_full(file.fd, out.data(), out.size());
  if (got < 0)
    return failure("read", path, errno);
  out.resize(static_cast<size_t>(got));
  return {};
}

long read_full(int fd, char* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    auto n = ::read(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (n == 0)
      break;
    done += static_cast<size_t>(n);
  }
  return static_cast<long>(done);
}

io_status remove_file_durable(const std::string& path) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT)
      return {};
    return failure("unlink", path, errno);
  }
  return fsync_directory(parent_of(path));
}

io_status make_directories(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode))
      return {};
    return {"mkdir " + path + ": exists and is not a directory"};
  }
  auto parent = parent_of(path);
  if (parent != path) {
    if (auto s = make_directories(parent); !s.ok())
      return s;
  }
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
    return failure("mkdir", path, errno);
  return fsync_directory(parent);
}

io_status list_directory(const std::string& path, std::vector<std::string>& names) {
  names.clear();
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr)
    return failure("opendir", path, errno);
  while (auto* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..")
      names.push_back(std::move(name));
  }
  ::closedir(dir);
  return {};
}

} // namespace nimbus::storage
