#include "nimbus/storage/file_chunk_store.hpp"

#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/durable_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <vector>

namespace nimbus::storage {

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string failure(std::string_view step, const std::string& path, int err) {
  return std::string{step} + " " + path + ": " + std::strerror(err);
}

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

// Writes data[done..] at its own offset.
std::string write_rest(int fd, std::string_view data, size_t done, const std::string& path) {
  while (done < data.size()) {
    auto n = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return failure("write", path, errno);
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

// O_DIRECT wants the buffer, offset and length aligned to the device's
// logical block size; 4096 covers every common one.
constexpr size_t direct_align = 4096;

struct aligned_buffer {
  void* data = nullptr;
  ~aligned_buffer() {
    std::free(data);
  }
};

class file_chunk_store final : public chunk_store {
public:
  explicit file_chunk_store(std::string dir) : dir_(std::move(dir)) {}

  std::string open() {
    if (auto s = make_directories(dir_); !s.ok())
      return s.error;
    std::vector<std::string> subdirs;
    if (auto s = list_directory(dir_, subdirs); !s.ok())
      return s.error;
    for (auto& name : subdirs) {
      if (name.size() != 2)
        continue;
      std::vector<std::string> names;
      if (auto s = list_directory(dir_ + "/" + name, names); !s.ok())
        return s.error;
      for (auto& file : names)
        if (ends_with(file, temp_suffix))
          if (auto s = remove_file_durable(dir_ + "/" + name + "/" + file); !s.ok())
            return s.error;
    }
    // Chunks that a dead process put but never synced may still be only in
    // the page cache; an ingest that finds them skips writing them.
    fd_guard root{::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    if (root.fd < 0)
      return failure("open", dir_, errno);
    if (::syncfs(root.fd) != 0)
      return failure("syncfs", dir_, errno);
    return {};
  }

  std::string put(const chunk_id& id, std::string_view sealed) override {
    auto path = path_of(id);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0)
      return {};
    auto temp = path + "." + request_hex(6) + std::string{temp_suffix};
    {
      fd_guard file{::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)};
      if (file.fd < 0 && errno == ENOENT) {
        // The first chunk of its subdirectory: the next sync() makes the
        // new directory's entry durable too.
        auto sub = subdir(id[0]);
        if (::mkdir(sub.c_str(), 0700) != 0 && errno != EEXIST)
          return failure("mkdir", sub, errno);
        {
          std::lock_guard lock(mutex_);
          root_dirty_ = true;
        }
        file.fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      }
      if (file.fd < 0)
        return failure("open", temp, errno);
      if (auto e = write_chunk(file.fd, sealed, temp); !e.empty()) {
        ::unlink(temp.c_str());
        return e;
      }
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) {
      auto err = errno;
      ::unlink(temp.c_str());
      return failure("rename", temp, err);
    }
    std::lock_guard lock(mutex_);
    pending_.insert(id);
    return {};
  }

  std::string sync() override {
    std::lock_guard sync_lock(sync_mutex_);
    std::set<chunk_id> batch;
    bool root_dirty = false;
    {
      std::lock_guard lock(mutex_);
      batch.swap(pending_);
      std::swap(root_dirty, root_dirty_);
    }
    std::string error;
    std::set<uint8_t> dirs;
    for (auto& id : batch) {
      auto path = path_of(id);
      fd_guard file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
      if (file.fd < 0) {
        // Removed since (garbage collected): nothing to make durable.
        if (errno == ENOENT)
          continue;
        if (error.empty())
          error = failure("open", path, errno);
        std::lock_guard lock(mutex_);
        pending_.insert(id);
        continue;
      }
      if (::fsync(file.fd) != 0) {
        // The kernel may have dropped the pages: the file's content is not
        // to be trusted, so drop it and let the next ingest write it again.
        if (error.empty())
          error = failure("fsync", path, errno);
        ::unlink(path.c_str());
        continue;
      }
      dirs.insert(id[0]);
    }
    for (auto d : dirs) {
      if (auto s = fsync_directory(subdir(d)); !s.ok()) {
        if (error.empty())
          error = s.error;
        // Their names may not be durable yet: the next sync() retries.
        std::lock_guard lock(mutex_);
        for (auto& id : batch)
          if (id[0] == d)
            pending_.insert(id);
      }
    }
    if (root_dirty) {
      if (auto s = fsync_directory(dir_); !s.ok()) {
        if (error.empty())
          error = s.error;
        std::lock_guard lock(mutex_);
        root_dirty_ = true;
      }
    }
    return error;
  }

  std::string get(const chunk_id& id, std::string& sealed) override {
    auto path = path_of(id);
    fd_guard file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (file.fd < 0) {
      if (errno == ENOENT)
        return "chunk " + chunk_id_hex(id).substr(0, 16) + ": not found";
      return failure("open", path, errno);
    }
    struct stat st {};
    if (::fstat(file.fd, &st) != 0)
      return failure("stat", path, errno);
    // A sealed chunk is never larger than this; a larger file is corrupt and
    // must not make us allocate whatever it claims.
    if (st.st_size > static_cast<off_t>(chunk_size + chunk_overhead))
      return "chunk " + chunk_id_hex(id).substr(0, 16) + ": wrong length";
    sealed.resize(static_cast<size_t>(st.st_size));
    auto got = read_full(file.fd, sealed.data(), sealed.size());
    if (got < 0)
      return failure("read", path, errno);
    sealed.resize(static_cast<size_t>(got));
    return {};
  }

  bool contains(const chunk_id& id) override {
    struct stat st {};
    return ::stat(path_of(id).c_str(), &st) == 0;
  }

  std::string remove(const chunk_id& id) override {
    {
      std::lock_guard lock(mutex_);
      pending_.erase(id);
    }
    auto s = remove_file_durable(path_of(id));
    return s.error;
  }

  std::string list(std::vector<chunk_id>& ids) override {
    ids.clear();
    std::vector<std::string> names;
    for (int i = 0; i < 256; ++i) {
      auto sub = subdir(static_cast<uint8_t>(i));
      if (auto s = list_directory(sub, names); !s.ok()) {
        struct stat st {};
        if (::stat(sub.c_str(), &st) != 0 && errno == ENOENT)
          continue;
        return s.error;
      }
      chunk_id id;
      for (auto& name : names)
        if (parse_chunk_id(name, id) && id[0] == i)
          ids.push_back(id);
    }
    return {};
  }

  bool local() const override {
    return true;
  }

private:
  // Writes a sealed chunk to a new file. The block-aligned bulk goes through
  // O_DIRECT where the file system supports it: copying a chunk into the
  // page cache costs more CPU than sealing it on our VMs, and the chunk is
  // not read back soon (workers cache what they read). The unaligned tail
  // is written buffered; sync()'s fsync covers both and the device cache.
  std::string write_chunk(int fd, std::string_view sealed, const std::string& path) {
    size_t done = 0;
    size_t bulk = sealed.size() / direct_align * direct_align;
    if (bulk > 0 && direct_.load(std::memory_order_relaxed)) {
      thread_local aligned_buffer buffer;
      if (buffer.data == nullptr
          && ::posix_memalign(&buffer.data, direct_align, chunk_size + chunk_overhead) != 0)
        buffer.data = nullptr;
      int flags = ::fcntl(fd, F_GETFL);
      if (buffer.data != nullptr && bulk <= chunk_size + chunk_overhead && flags >= 0
          && ::fcntl(fd, F_SETFL, flags | O_DIRECT) == 0) {
        std::memcpy(buffer.data, sealed.data(), bulk);
        while (done < bulk) {
          auto n = ::pwrite(fd, static_cast<char*>(buffer.data) + done, bulk - done,
                            static_cast<off_t>(done));
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0 && errno == EINVAL && done == 0) {
            // Not supported here after all (e.g. tmpfs, some FUSE file
            // systems): buffered from now on.
            direct_.store(false, std::memory_order_relaxed);
            break;
          }
          if (n < 0)
            return failure("write", path, errno);
          done += static_cast<size_t>(n);
          if (done % direct_align != 0)
            break;
        }
        if (::fcntl(fd, F_SETFL, flags) != 0)
          return failure("fcntl", path, errno);
      } else {
        direct_.store(false, std::memory_order_relaxed);
      }
    }
    return write_rest(fd, sealed, done, path);
  }

  std::string subdir(uint8_t first) const {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out = dir_ + "/";
    out.push_back(digits[first >> 4]);
    out.push_back(digits[first & 0xf]);
    return out;
  }

  std::string path_of(const chunk_id& id) const {
    return subdir(id[0]) + "/" + chunk_id_hex(id);
  }

  std::string dir_;
  std::mutex mutex_;
  // Held for a whole sync(): a sync that returns has covered every put()
  // that returned before it started, even one another sync() took first.
  std::mutex sync_mutex_;
  std::set<chunk_id> pending_;
  // A subdirectory was created since the last sync().
  bool root_dirty_ = false;
  // The file system accepts O_DIRECT writes (until one fails with EINVAL).
  std::atomic<bool> direct_{true};
};

} // namespace

std::shared_ptr<chunk_store> open_file_chunk_store(const std::string& dir, std::string& error) {
  auto store = std::make_shared<file_chunk_store>(dir);
  error = store->open();
  if (!error.empty())
    return nullptr;
  return store;
}

} // namespace nimbus::storage
