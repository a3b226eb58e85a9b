#include "nimbus/storage/lazy_image.hpp"

#include "nimbus/config/logging.hpp"

#define FUSE_USE_VERSION 31
#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <system_error>

namespace nimbus::storage {

namespace {

constexpr int worker_count = 4;
// Read-ahead (see read_ahead()): a sequential reader gets up to this many
// chunks loaded ahead of it, by as many threads as a disk or a chunk server
// serves well at once. A reader that has just started gets fewer.
constexpr uint64_t read_ahead_max = 4;
constexpr int prefetch_threads = 4;
// Reads smaller than this neither start nor continue a stream; one that
// starts within stream_slack of where a stream got to continues it.
constexpr uint64_t stream_min_read = 64 << 10;
constexpr uint64_t stream_slack = 256 << 10;
// Chunks waiting for a prefetch thread; beyond this, read-ahead is dropped.
constexpr size_t prefetch_queue_max = 64;
// An inode's attributes never change (a name gets a new inode when re-added);
// names are not cached, so a removed name disappears at once.
constexpr double attr_timeout = 3600;
constexpr double entry_timeout = 0;

// libfuse reports through its own log function (stderr by default): send it
// to the storage logger instead.
void fuse_to_spdlog(enum fuse_log_level level, const char* format, va_list args) {
  char line[512];
  std::vsnprintf(line, sizeof line, format, args);
  std::string text = line;
  while (!text.empty() && text.back() == '\n')
    text.pop_back();
  if (level <= FUSE_LOG_ERR)
    config::logger("storage")->error("libfuse: {}", text);
  else if (level <= FUSE_LOG_NOTICE)
    config::logger("storage")->warn("libfuse: {}", text);
  else
    config::logger("storage")->debug("libfuse: {}", text);
}

bool valid_name(const std::string& name) {
  return !name.empty() && name.size() <= 255 && name != "." && name != ".."
         && name.find('/') == std::string::npos && name.find('\0') == std::string::npos;
}

} // namespace

struct lazy_image_server::handlers {
  using image = lazy_image_server::image;

  static lazy_image_server& server_of(fuse_req_t req) {
    return *static_cast<lazy_image_server*>(fuse_req_userdata(req));
  }

  static void file_attr(const image& img, struct stat& st) {
    st = {};
    st.st_ino = img.inode;
    st.st_mode = S_IFREG | 0444;
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(img.size);
    st.st_blksize = 4096;
    st.st_blocks = static_cast<blkcnt_t>((img.size + 511) / 512);
  }

  static void root_attr(struct stat& st) {
    st = {};
    st.st_ino = FUSE_ROOT_ID;
    st.st_mode = S_IFDIR | 0555;
    st.st_nlink = 2;
  }

  static void on_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    auto img = parent == FUSE_ROOT_ID ? server_of(req).lookup(name) : nullptr;
    if (!img) {
      fuse_reply_err(req, ENOENT);
      return;
    }
    fuse_entry_param entry{};
    entry.ino = img->inode;
    entry.generation = 1;
    entry.attr_timeout = attr_timeout;
    entry.entry_timeout = entry_timeout;
    file_attr(*img, entry.attr);
    // A failed reply (interrupted lookup) leaves a count the kernel never
    // forgets; harmless: the inode just stays known.
    fuse_reply_entry(req, &entry);
  }

  static void on_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    server_of(req).forget(ino, nlookup);
    fuse_reply_none(req);
  }

  static void on_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    for (size_t i = 0; i < count; ++i)
      server_of(req).forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
  }

  static void on_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    struct stat st;
    if (ino == FUSE_ROOT_ID) {
      root_attr(st);
    } else if (auto img = server_of(req).find(ino)) {
      file_attr(*img, st);
    } else {
      fuse_reply_err(req, ENOENT);
      return;
    }
    fuse_reply_attr(req, &st, attr_timeout);
  }

  static void on_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
      fuse_reply_err(req, EROFS);
      return;
    }
    auto img = server_of(req).find(ino);
    if (!img) {
      fuse_reply_err(req, ino == FUSE_ROOT_ID ? EISDIR : ENOENT);
      return;
    }
    // The content behind a name never changes: let the kernel keep its pages.
    fi->keep_cache = 1;
    // Nothing is written, so close() has nothing to flush. Without this the
    // kernel sends FLUSH on every close and waits for the answer: a process
    // that serves this file system itself and dies (its serving threads gone
    // first) would then hang in exit for ever on its own open files.
    fi->noflush = 1;
    // The handle keeps the image alive for reads after remove(). When the reply
    // fails (open interrupted), libfuse calls release itself.
    auto& server = server_of(req);
    auto* handle = new std::shared_ptr<const image>(std::move(img));
    {
      std::lock_guard lock(server.mutex_);
      server.handles_.insert(handle);
    }
    fi->fh = reinterpret_cast<uint64_t>(handle);
    fuse_reply_open(req, fi);
  }

  static void on_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    auto* handle = reinterpret_cast<std::shared_ptr<const image>*>(fi->fh);
    auto& server = server_of(req);
    {
      std::lock_guard lock(server.mutex_);
      server.handles_.erase(handle);
    }
    delete handle;
    fuse_reply_err(req, 0);
  }

  // Fetches the chunks the read overlaps (through the cache) and replies with
  // the slices of their plaintexts, without copying them.
  static void on_read(fuse_req_t req, fuse_ino_t, size_t size, off_t offset, fuse_file_info* fi) {
    const auto& img = **reinterpret_cast<std::shared_ptr<const image>*>(fi->fh);
    auto begin = static_cast<uint64_t>(offset);
    if (offset < 0 || begin >= img.size || size == 0) {
      fuse_reply_buf(req, nullptr, 0);
      return;
    }
    auto end = std::min<uint64_t>(img.size, begin + size);
    auto first = begin / chunk_size;
    auto last = (end - 1) / chunk_size;
    auto& server = server_of(req);
    std::vector<std::shared_ptr<const std::string>> texts;
    std::vector<iovec> parts;
    // No exception may unwind into libfuse's C code.
    try {
      // Sequential readers (a runtime loading its files, erofs reading a big
      // file) reach the next chunks soon: queue them first, so that their
      // fetches overlap this read's own.
      auto depth = server.read_ahead(img.inode, begin, end);
      for (auto i = last + 1; i < img.chunks.size() && i <= last + depth; ++i)
        server.prefetch(img.chunks[i]);
      note_reads(img, first, last);
      for (auto i = first; i <= last; ++i) {
        std::shared_ptr<const std::string> text;
        auto error = server.cache_->read(img.chunks[i], text);
        if (!error.empty()) {
          config::logger("storage")->warn("lazy image {}: read failed: {}", img.name, error);
          fuse_reply_err(req, EIO);
          return;
        }
        auto chunk_begin = i * chunk_size;
        auto from = std::max(begin, chunk_begin) - chunk_begin;
        auto to = std::min<uint64_t>(end, chunk_begin + text->size()) - chunk_begin;
        parts.push_back(iovec{const_cast<char*>(text->data() + from), to - from});
        texts.push_back(std::move(text));
      }
    } catch (const std::exception&) {
      fuse_reply_err(req, EIO);
      return;
    }
    fuse_reply_iov(req, parts.data(), static_cast<int>(parts.size()));
  }

  static void on_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
                         fuse_file_info*) {
    if (ino != FUSE_ROOT_ID) {
      fuse_reply_err(req, ENOTDIR);
      return;
    }
    struct entry {
      std::string name;
      uint64_t inode;
      mode_t mode;
    };
    std::vector<entry> entries{{".", FUSE_ROOT_ID, S_IFDIR}, {"..", FUSE_ROOT_ID, S_IFDIR}};
    for (auto& img : server_of(req).list())
      entries.push_back({img->name, img->inode, S_IFREG});
    std::string buffer(size, '\0');
    size_t used = 0;
    for (auto i = static_cast<size_t>(std::max<off_t>(offset, 0)); i < entries.size(); ++i) {
      struct stat st {};
      st.st_ino = entries[i].inode;
      st.st_mode = entries[i].mode;
      auto need = fuse_add_direntry(req, buffer.data() + used, size - used, entries[i].name.c_str(),
                                    &st, static_cast<off_t>(i + 1));
      if (need > size - used)
        break;
      used += need;
    }
    fuse_reply_buf(req, buffer.data(), used);
  }

  static const fuse_lowlevel_ops& operations() {
    static const fuse_lowlevel_ops ops = [] {
      fuse_lowlevel_ops o{};
      o.lookup = on_lookup;
      o.forget = on_forget;
      o.forget_multi = on_forget_multi;
      o.getattr = on_getattr;
      o.open = on_open;
      o.read = on_read;
      o.release = on_release;
      o.readdir = on_readdir;
      return o;
    }();
    return ops;
  }
};

bool lazy_image_server::available() {
  int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return false;
  ::close(fd);
  return true;
}

lazy_image_server::lazy_image_server(std::string mount_dir, std::shared_ptr<chunk_cache> cache)
    : mount_dir_(std::move(mount_dir)), cache_(std::move(cache)) {}

std::unique_ptr<lazy_image_server> lazy_image_server::start(const std::string& mount_dir,
                                                            std::shared_ptr<chunk_cache> cache,
                                                            std::string& error) {
  error.clear();
  static std::once_flag log_once;
  std::call_once(log_once, [] { fuse_set_log_func(fuse_to_spdlog); });
  std::error_code ec;
  std::filesystem::create_directories(mount_dir, ec);
  auto dir = std::filesystem::absolute(mount_dir, ec).lexically_normal().string();
  if (ec) {
    error = "lazy image: mount directory " + mount_dir + ": " + ec.message();
    return nullptr;
  }
  while (dir.size() > 1 && dir.back() == '/')
    dir.pop_back();
  std::unique_ptr<lazy_image_server> server(new lazy_image_server(dir, std::move(cache)));
  server->stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (server->stop_fd_ < 0) {
    error = std::string("lazy image: eventfd: ") + std::strerror(errno);
    return nullptr;
  }
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  fuse_opt_add_arg(&args, "nimbus");
  fuse_opt_add_arg(&args, "-o");
  fuse_opt_add_arg(&args, "ro,default_permissions,fsname=nimbus-lazy,subtype=nimbus-lazy");
  auto& ops = handlers::operations();
  server->session_ = fuse_session_new(&args, &ops, sizeof ops, server.get());
  fuse_opt_free_args(&args);
  if (server->session_ == nullptr) {
    error = "lazy image: cannot create a fuse session";
    return nullptr;
  }
  if (fuse_session_mount(server->session_, dir.c_str()) != 0) {
    fuse_session_destroy(server->session_);
    server->session_ = nullptr;
    error = "lazy image: cannot mount fuse at " + dir;
    return nullptr;
  }
  // Workers wait in poll() on the device and the stop event, then read
  // without blocking: several workers may wake for one request.
  int fd = fuse_session_fd(server->session_);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  for (int i = 0; i < worker_count; ++i)
    server->workers_.emplace_back([s = server.get()] { s->serve(); });
  for (int i = 0; i < prefetch_threads; ++i)
    server->prefetchers_.emplace_back([s = server.get()] { s->run_prefetch(); });
  return server;
}

void lazy_image_server::serve() {
  fuse_buf buffer{};
  int fd = fuse_session_fd(session_);
  while (true) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (fds[1].revents != 0 || (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0)
      break;
    int got = fuse_session_receive_buf(session_, &buffer);
    if (got == -EINTR || got == -EAGAIN)
      continue;
    if (got <= 0)
      break;
    fuse_session_process_buf(session_, &buffer);
  }
  std::free(buffer.mem);
}

// Read-ahead follows sequential streams of reads, as the kernel's does for a
// file: a stream is a run of reads of one image, each starting about where
// the previous ones ended (erofs reading a file front to back; the kernel
// sends its windows in order, the workers may serve them slightly out of
// order). Small reads (erofs metadata, small files) and the first read of a
// stream (a page fault's read-around in a big binary) load nothing ahead;
// then a stream gets 2 chunks ahead, and read_ahead_max once it has read
// 1 MiB.
uint64_t lazy_image_server::read_ahead(uint64_t inode, uint64_t begin, uint64_t end) {
  if (end - begin < stream_min_read)
    return 0;
  std::lock_guard lock(prefetch_mutex_);
  for (auto& s : streams_) {
    if (s.bytes == 0 || s.inode != inode || begin + stream_slack < s.next
        || begin > s.next + stream_slack)
      continue;
    if (end > s.next) {
      s.bytes += end - s.next;
      s.next = end;
    }
    return s.bytes < (1 << 20) ? 2 : read_ahead_max;
  }
  streams_[next_stream_++ % streams_.size()] = read_stream{inode, end, end - begin};
  return 0;
}

void lazy_image_server::note_reads(const image& img, uint64_t first, uint64_t last) {
  std::lock_guard lock(img.reads_mutex);
  for (auto i = first; i <= last && img.first_reads.size() < first_reads_max; ++i)
    if (std::find(img.first_reads.begin(), img.first_reads.end(), i) == img.first_reads.end())
      img.first_reads.push_back(static_cast<uint32_t>(i));
}

std::vector<uint32_t> lazy_image_server::first_reads(const std::string& name) const {
  std::shared_ptr<const image> img;
  {
    std::lock_guard lock(mutex_);
    auto it = by_name_.find(name);
    if (it == by_name_.end())
      return {};
    img = it->second;
  }
  std::lock_guard lock(img->reads_mutex);
  return img->first_reads;
}

void lazy_image_server::preload(const std::string& name, const std::vector<uint32_t>& indexes) {
  std::shared_ptr<const image> img;
  {
    std::lock_guard lock(mutex_);
    auto it = by_name_.find(name);
    if (it == by_name_.end())
      return;
    img = it->second;
  }
  for (auto i : indexes)
    if (i < img->chunks.size())
      prefetch(img->chunks[i]);
}

void lazy_image_server::prefetch(const chunk_ref& ref) {
  {
    std::lock_guard lock(prefetch_mutex_);
    if (prefetch_stop_ || prefetch_queue_.size() >= prefetch_queue_max)
      return;
    for (const auto& queued : prefetch_queue_)
      if (queued.id == ref.id)
        return;
    prefetch_queue_.push_back(ref);
    ++prefetches_;
  }
  prefetch_wake_.notify_one();
}

void lazy_image_server::run_prefetch() {
  std::unique_lock lock(prefetch_mutex_);
  while (true) {
    prefetch_wake_.wait(lock, [this] { return prefetch_stop_ || !prefetch_queue_.empty(); });
    if (prefetch_stop_)
      return;
    auto ref = prefetch_queue_.front();
    prefetch_queue_.pop_front();
    lock.unlock();
    // A chunk in memory or being loaded by another thread costs a lookup; a
    // failure shows again (and is reported) when a reader asks for the chunk.
    try {
      cache_->preload(ref);
    } catch (const std::exception&) {
    }
    lock.lock();
  }
}

uint64_t lazy_image_server::prefetches() const {
  std::lock_guard lock(const_cast<std::mutex&>(prefetch_mutex_));
  return prefetches_;
}

void lazy_image_server::stop() {
  {
    std::lock_guard lock(prefetch_mutex_);
    prefetch_stop_ = true;
  }
  prefetch_wake_.notify_all();
  for (auto& t : prefetchers_)
    t.join();
  prefetchers_.clear();
  uint64_t one = 1;
  while (::write(stop_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
  for (auto& worker : workers_)
    worker.join();
  workers_.clear();
  // Closes the device first (aborting the connection, so that users still
  // holding a file get errors instead of hanging), then detaches the mount
  // (MNT_DETACH when root).
  fuse_session_unmount(session_);
  fuse_session_destroy(session_);
  session_ = nullptr;
  for (auto* handle : handles_)
    delete handle;
  handles_.clear();
}

lazy_image_server::~lazy_image_server() {
  if (session_ != nullptr)
    stop();
  if (stop_fd_ >= 0)
    ::close(stop_fd_);
}

std::string lazy_image_server::add(const std::string& name, uint64_t size,
                                   std::vector<chunk_ref> chunks, std::string& file_path) {
  if (!valid_name(name))
    return "lazy image: invalid name";
  auto expected = (size + chunk_size - 1) / chunk_size;
  if (chunks.size() != expected)
    return "lazy image " + name + ": " + std::to_string(chunks.size()) + " chunks for "
           + std::to_string(size) + " bytes";
  for (size_t i = 0; i < chunks.size(); ++i) {
    auto want = i + 1 < chunks.size() ? chunk_size : size - i * chunk_size;
    if (chunks[i].size != want)
      return "lazy image " + name + ": chunk " + std::to_string(i) + " has the wrong size";
  }
  std::lock_guard lock(mutex_);
  if (by_name_.count(name) != 0)
    return "lazy image " + name + ": already added";
  auto img = std::make_shared<image>();
  img->inode = next_inode_++;
  img->name = name;
  img->size = size;
  img->chunks = std::move(chunks);
  by_name_[name] = img;
  by_inode_[img->inode] = img;
  file_path = mount_dir_ + "/" + name;
  return {};
}

void lazy_image_server::remove(const std::string& name) {
  std::lock_guard lock(mutex_);
  auto it = by_name_.find(name);
  if (it == by_name_.end())
    return;
  auto inode = it->second->inode;
  by_name_.erase(it);
  if (lookups_.count(inode) == 0)
    by_inode_.erase(inode);
}

std::shared_ptr<const lazy_image_server::image> lazy_image_server::lookup(const std::string& name) {
  std::lock_guard lock(mutex_);
  auto it = by_name_.find(name);
  if (it == by_name_.end())
    return nullptr;
  ++lookups_[it->second->inode];
  return it->second;
}

void lazy_image_server::forget(uint64_t inode, uint64_t count) {
  std::lock_guard lock(mutex_);
  auto it = lookups_.find(inode);
  if (it == lookups_.end())
    return;
  if (it->second > count) {
    it->second -= count;
    return;
  }
  lookups_.erase(it);
  auto img = by_inode_.find(inode);
  if (img != by_inode_.end()) {
    auto named = by_name_.find(img->second->name);
    if (named == by_name_.end() || named->second->inode != inode)
      by_inode_.erase(img);
  }
}

std::shared_ptr<const lazy_image_server::image> lazy_image_server::find(uint64_t inode) const {
  std::lock_guard lock(mutex_);
  auto it = by_inode_.find(inode);
  return it == by_inode_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const lazy_image_server::image>> lazy_image_server::list() const {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<const image>> out;
  for (auto& [name, img] : by_name_)
    out.push_back(img);
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a->inode < b->inode; });
  return out;
}

} // namespace nimbus::storage
