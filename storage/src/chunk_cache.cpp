#include "nimbus/storage/chunk_cache.hpp"

#include "nimbus/config/logging.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <system_error>
#include <tuple>
#include <vector>

namespace nimbus::storage {

namespace {

namespace fs = std::filesystem;

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

// Reads a whole file of at most `limit` bytes; false on any error.
bool read_small_file(const std::string& path, size_t limit, std::string& out) {
  fd_guard file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0)
    return false;
  struct stat st {};
  if (::fstat(file.fd, &st) != 0 || st.st_size < 0 || static_cast<size_t>(st.st_size) > limit)
    return false;
  out.resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    auto n = ::read(file.fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// A plaintext stays in the memory tier, so it needs fresh memory each time;
// one madvise faults in all its pages at once, which costs about half of
// faulting them one by one as open_chunk writes them. A kernel without
// MADV_POPULATE_WRITE (before 5.14) just faults them as before.
void reserve_populated(std::string& text, size_t size) {
  text.reserve(size);
  auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  auto begin = (reinterpret_cast<uintptr_t>(text.data()) + page - 1) & ~(page - 1);
  auto end = (reinterpret_cast<uintptr_t>(text.data()) + size) & ~(page - 1);
#ifdef MADV_POPULATE_WRITE
  if (end > begin)
    ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
#endif
}

bool write_whole_file(const std::string& path, const std::string& data) {
  fd_guard file{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
  if (file.fd < 0)
    return false;
  size_t done = 0;
  while (done < data.size()) {
    auto n = ::write(file.fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Sealed chunks are read into buffers kept for reuse, made when the cache is
// made: a fresh 512 KiB string costs more than decrypting it (a page fault
// per page, zeroing), and a node's first cold starts would pay for them.
// One per thread that fetches at once (the lazy image server's workers and
// read-ahead threads); more are made when needed and freed after use.
constexpr size_t spare_buffers_max = 8;

} // namespace

// Lends one of spare_buffers_ for a fetch and takes it back afterwards.
class chunk_cache::buffer_lease {
public:
  explicit buffer_lease(chunk_cache& cache) : cache_(cache) {
    {
      std::lock_guard lock(cache_.mutex_);
      if (!cache_.spare_buffers_.empty()) {
        buffer_ = std::move(cache_.spare_buffers_.back());
        cache_.spare_buffers_.pop_back();
      }
    }
    if (!buffer_)
      buffer_ = std::make_unique<std::string>();
  }
  ~buffer_lease() {
    std::lock_guard lock(cache_.mutex_);
    if (cache_.spare_buffers_.size() < spare_buffers_max)
      cache_.spare_buffers_.push_back(std::move(buffer_));
  }
  buffer_lease(const buffer_lease&) = delete;
  buffer_lease& operator=(const buffer_lease&) = delete;
  std::string& get() {
    return *buffer_;
  }

private:
  chunk_cache& cache_;
  std::unique_ptr<std::string> buffer_;
};

chunk_cache::chunk_cache(std::shared_ptr<chunk_store> store, std::string disk_dir,
                         uint64_t memory_bytes, uint64_t disk_bytes)
    : store_(std::move(store)), disk_dir_(std::move(disk_dir)), memory_budget_(memory_bytes),
      disk_budget_(disk_bytes),
      disk_enabled_(disk_bytes > 0 && !disk_dir_.empty() && !store_->local()) {
  for (size_t i = 0; i < spare_buffers_max; ++i) {
    auto buffer = std::make_unique<std::string>();
    reserve_populated(*buffer, chunk_size + chunk_overhead);
    buffer->resize(chunk_size + chunk_overhead);
    spare_buffers_.push_back(std::move(buffer));
  }
  if (!disk_enabled_)
    return;
  std::error_code ec;
  fs::create_directories(disk_dir_, ec);
  if (ec) {
    config::logger("storage")->warn("chunk cache: disk tier off, cannot create {}: {}", disk_dir_,
                                    ec.message());
    disk_enabled_ = false;
    return;
  }
  load_disk_index();
}

std::string chunk_cache::disk_path(const chunk_id& id) const {
  return disk_dir_ + "/" + chunk_id_hex(id);
}

// Takes over the disk copies of a previous run, oldest first out. They are
// verified when read like any other copy; stray temporary files are removed.
void chunk_cache::load_disk_index() {
  std::vector<std::tuple<fs::file_time_type, chunk_id, uint64_t>> found;
  std::error_code ec;
  for (fs::directory_iterator it(disk_dir_, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code entry_ec;
    auto name = it->path().filename().string();
    chunk_id id{};
    if (!it->is_regular_file(entry_ec) || !parse_chunk_id(name, id)) {
      fs::remove_all(it->path(), entry_ec);
      continue;
    }
    auto size = it->file_size(entry_ec);
    auto time = it->last_write_time(entry_ec);
    if (!entry_ec)
      found.emplace_back(time, id, size);
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
  std::lock_guard lock(mutex_);
  for (auto& [time, id, size] : found) {
    disk_lru_.push_front(id);
    disk_[id] = disk_entry{size, disk_lru_.begin()};
    disk_used_ += size;
  }
  evict_disk_locked();
}

void chunk_cache::evict_disk_locked() {
  while (disk_used_ > disk_budget_ && !disk_lru_.empty()) {
    auto id = disk_lru_.back();
    disk_lru_.pop_back();
    auto it = disk_.find(id);
    disk_used_ -= it->second.bytes;
    disk_.erase(it);
    ::unlink(disk_path(id).c_str());
  }
}

std::string chunk_cache::read(const chunk_ref& ref, std::shared_ptr<const std::string>& plaintext) {
  plaintext.reset();
  std::shared_ptr<flight> own;
  {
    std::unique_lock lock(mutex_);
    if (auto hit = memory_.find(ref); hit != memory_.end()) {
      memory_lru_.splice(memory_lru_.begin(), memory_lru_, hit->second.lru);
      ++stats_.memory_hits;
      plaintext = hit->second.plaintext;
      return {};
    }
    if (auto running = flights_.find(ref); running != flights_.end()) {
      auto shared = running->second;
      ++stats_.shared_fetches;
      shared->finished.wait(lock, [&] { return shared->done; });
      plaintext = shared->plaintext;
      return shared->error;
    }
    own = std::make_shared<flight>();
    flights_.emplace(ref, own);
  }
  return complete(ref, own, plaintext);
}

bool chunk_cache::preload(const chunk_ref& ref) {
  std::shared_ptr<flight> own;
  {
    std::lock_guard lock(mutex_);
    if (memory_budget_ == 0 || memory_.count(ref) != 0 || flights_.count(ref) != 0)
      return false;
    own = std::make_shared<flight>();
    flights_.emplace(ref, own);
  }
  std::shared_ptr<const std::string> plaintext;
  complete(ref, own, plaintext);
  return true;
}

std::string chunk_cache::complete(const chunk_ref& ref, const std::shared_ptr<flight>& own,
                                  std::shared_ptr<const std::string>& plaintext) {
  std::shared_ptr<const std::string> result;
  std::string error;
  try {
    error = fetch(ref, result);
  } catch (const std::exception& e) {
    // Whatever happens, the flight ends and its followers wake up.
    result.reset();
    error = std::string("chunk cache: ") + e.what();
  }
  {
    std::lock_guard lock(mutex_);
    if (error.empty())
      remember(ref, result);
    own->done = true;
    own->error = error;
    own->plaintext = result;
    flights_.erase(ref);
  }
  own->finished.notify_all();
  plaintext = std::move(result);
  return error;
}

std::string chunk_cache::fetch(const chunk_ref& ref,
                               std::shared_ptr<const std::string>& plaintext) {
  buffer_lease lease(*this);
  auto& sealed = lease.get();
  std::string text;
  reserve_populated(text, ref.size);
  if (disk_enabled_ && read_disk(ref, sealed, text)) {
    plaintext = std::make_shared<const std::string>(std::move(text));
    return {};
  }
  {
    std::lock_guard lock(mutex_);
    ++stats_.store_reads;
  }
  if (auto error = store_->get(ref.id, sealed); !error.empty())
    return error;
  {
    std::lock_guard lock(mutex_);
    stats_.fetched_bytes += sealed.size();
  }
  if (auto error = open_chunk(ref, sealed, text); !error.empty())
    return error;
  if (disk_enabled_)
    write_disk(ref.id, sealed);
  plaintext = std::make_shared<const std::string>(std::move(text));
  return {};
}

bool chunk_cache::read_disk(const chunk_ref& ref, std::string& sealed, std::string& plaintext) {
  {
    std::lock_guard lock(mutex_);
    if (disk_.count(ref.id) == 0)
      return false;
  }
  if (!read_small_file(disk_path(ref.id), chunk_size + chunk_overhead, sealed)) {
    drop_disk(ref.id);
    return false;
  }
  if (auto error = open_chunk(ref, sealed, plaintext); !error.empty()) {
    config::logger("storage")->warn("chunk cache: dropping bad disk copy: {}", error);
    drop_disk(ref.id);
    return false;
  }
  std::lock_guard lock(mutex_);
  ++stats_.disk_hits;
  if (auto it = disk_.find(ref.id); it != disk_.end())
    disk_lru_.splice(disk_lru_.begin(), disk_lru_, it->second.lru);
  return true;
}

void chunk_cache::write_disk(const chunk_id& id, const std::string& sealed) {
  if (sealed.size() > disk_budget_)
    return;
  std::string temp;
  {
    std::lock_guard lock(mutex_);
    temp = disk_path(id) + ".tmp" + std::to_string(++temp_counter_);
  }
  if (!write_whole_file(temp, sealed)) {
    ::unlink(temp.c_str());
    return;
  }
  // Renamed under the lock so that the index always matches the files.
  std::lock_guard lock(mutex_);
  if (::rename(temp.c_str(), disk_path(id).c_str()) != 0) {
    ::unlink(temp.c_str());
    return;
  }
  if (auto old = disk_.find(id); old != disk_.end()) {
    disk_used_ -= old->second.bytes;
    disk_lru_.erase(old->second.lru);
    disk_.erase(old);
  }
  disk_lru_.push_front(id);
  disk_[id] = disk_entry{sealed.size(), disk_lru_.begin()};
  disk_used_ += sealed.size();
  evict_disk_locked();
}

void chunk_cache::drop_disk(const chunk_id& id) {
  std::lock_guard lock(mutex_);
  auto it = disk_.find(id);
  if (it == disk_.end())
    return;
  disk_used_ -= it->second.bytes;
  disk_lru_.erase(it->second.lru);
  disk_.erase(it);
  ::unlink(disk_path(id).c_str());
}

void chunk_cache::remember(const chunk_ref& ref,
                           const std::shared_ptr<const std::string>& plaintext) {
  if (memory_budget_ == 0 || plaintext->size() > memory_budget_ || memory_.count(ref) != 0)
    return;
  memory_lru_.push_front(ref);
  memory_.emplace(ref, memory_entry{plaintext, memory_lru_.begin()});
  memory_used_ += plaintext->size();
  while (memory_used_ > memory_budget_) {
    auto it = memory_.find(memory_lru_.back());
    memory_used_ -= it->second.plaintext->size();
    memory_.erase(it);
    memory_lru_.pop_back();
  }
}

cache_stats chunk_cache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

} // namespace nimbus::storage
