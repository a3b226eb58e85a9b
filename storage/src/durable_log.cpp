#include "nimbus/storage/durable_log.hpp"

#include "nimbus/config/logging.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>

namespace nimbus::storage {

namespace {

// CRC-32C uses the Castagnoli polynomial, reflected (0x82f63b78), one table
// lookup per byte. The table is built at compile time so there is no
// initialisation order to get wrong.
constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit)
      c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    table[i] = c;
  }
  return table;
}

constexpr auto crc32c_table = make_crc32c_table();

// Offsets inside a record header (see the format in durable_log.hpp).
constexpr size_t length_offset = 4;
constexpr size_t crc_offset = 8;
// The checksum covers everything from seq to the end of the payload.
constexpr size_t checked_offset = 12;
constexpr size_t seq_offset = 12;
constexpr size_t epoch_offset = 20;
constexpr size_t type_offset = 28;

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>(v >> (8 * i)));
}

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>(v >> (8 * i)));
}

uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// Appends one encoded record to `out`.
void encode_record(std::string& out, uint64_t seq, uint64_t epoch, uint8_t type,
                   std::string_view payload) {
  auto start = out.size();
  put_u32(out, log_record_magic);
  put_u32(out, static_cast<uint32_t>(payload.size()));
  put_u32(out, 0); // the crc, filled in below once the covered bytes are there
  put_u64(out, seq);
  put_u64(out, epoch);
  out.push_back(static_cast<char>(type));
  out.append(payload);
  auto crc = crc32c(std::string_view{out}.substr(start + checked_offset));
  for (int i = 0; i < 4; ++i)
    out[start + crc_offset + i] = static_cast<char>(crc >> (8 * i));
}

// What is found at an offset of a segment.
enum class record_check { ok, incomplete, bad_magic, too_long, bad_crc };

const char* describe(record_check check) {
  switch (check) {
  case record_check::ok:
    return "valid record";
  case record_check::incomplete:
    return "incomplete record";
  case record_check::bad_magic:
    return "bad magic";
  case record_check::too_long:
    return "record length over max_record_bytes";
  case record_check::bad_crc:
    return "checksum mismatch";
  }
  return "?";
}

// Checks the record at `offset` of `data`; when it is valid, fills `out` (if
// given) and `size` (header and payload).
record_check check_record(std::string_view data, uint64_t offset, uint64_t max_payload,
                          log_record* out, uint64_t& size) {
  if (data.size() - offset < log_record_header_bytes)
    return record_check::incomplete;
  const char* p = data.data() + offset;
  if (get_u32(p) != log_record_magic)
    return record_check::bad_magic;
  uint64_t length = get_u32(p + length_offset);
  if (length > max_payload)
    return record_check::too_long;
  if (data.size() - offset - log_record_header_bytes < length)
    return record_check::incomplete;
  size = log_record_header_bytes + length;
  auto covered = data.substr(offset + checked_offset, size - checked_offset);
  if (crc32c(covered) != get_u32(p + crc_offset))
    return record_check::bad_crc;
  if (out) {
    out->seq = get_u64(p + seq_offset);
    out->epoch = get_u64(p + epoch_offset);
    out->type = static_cast<uint8_t>(p[type_offset]);
    out->payload.assign(p + log_record_header_bytes, length);
  }
  return record_check::ok;
}

// The offset of the first valid record at or after `from`, or -1. Used to
// tell a torn tail (nothing valid after the damage) from corruption.
int64_t find_valid_record(std::string_view data, uint64_t from, uint64_t max_payload) {
  for (uint64_t at = from; at + log_record_header_bytes <= data.size(); ++at) {
    uint64_t size = 0;
    if (get_u32(data.data() + at) == log_record_magic
        && check_record(data, at, max_payload, nullptr, size) == record_check::ok)
      return static_cast<int64_t>(at);
  }
  return -1;
}

std::string segment_name(uint64_t first_seq) {
  char name[32];
  std::snprintf(name, sizeof name, "%020llu.seg", static_cast<unsigned long long>(first_seq));
  return name;
}

// Parses `<20 digits>.seg`; anything else in the directory is not a segment.
bool parse_segment_name(const std::string& name, uint64_t& first_seq) {
  if (name.size() != 24 || name.compare(20, 4, ".seg") != 0)
    return false;
  uint64_t v = 0;
  for (size_t i = 0; i < 20; ++i) {
    char c = name[i];
    if (c < '0' || c > '9')
      return false;
    uint64_t digit = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - digit) / 10)
      return false;
    v = v * 10 + digit;
  }
  first_seq = v;
  return true;
}

std::string failure(std::string_view step, const std::string& path, int err) {
  return "durable log: " + std::string{step} + " " + path + ": " + std::strerror(err);
}

std::string corruption(const std::string& path, uint64_t offset, const std::string& what) {
  return "durable log: corrupt segment " + path + " at byte " + std::to_string(offset) + ": "
         + what;
}

// Reads a whole file through `fs`; pread may return short counts.
int read_all(log_fs& fs, int handle, std::string& data) {
  auto size = fs.size(handle);
  if (size < 0)
    return -1;
  data.resize(static_cast<size_t>(size));
  size_t done = 0;
  while (done < data.size()) {
    auto n = fs.pread(handle, data.data() + done, data.size() - done, done);
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    done += static_cast<size_t>(n);
  }
  data.resize(done);
  return 0;
}

// Writes all of `data` at `offset`; pwrite may return short counts.
int write_all(log_fs& fs, int handle, std::string_view data, uint64_t offset) {
  while (!data.empty()) {
    auto n = fs.pwrite(handle, data.data(), data.size(), offset);
    if (n < 0)
      return -1;
    // No progress and no error would loop for ever: call it an I/O error.
    if (n == 0) {
      errno = EIO;
      return -1;
    }
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return 0;
}

// Closes a log_fs handle when it goes out of scope, unless released.
struct handle_guard {
  log_fs& fs;
  int handle;
  ~handle_guard() {
    if (handle >= 0)
      fs.close(handle);
  }
  int release() {
    return std::exchange(handle, -1);
  }
};

std::string parent_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos)
    return ".";
  if (slash == 0)
    return "/";
  return path.substr(0, slash);
}

/// log_fs on POSIX calls. Short reads and writes are returned as they come
/// (the log loops); EINTR is retried here.
class posix_fs final : public log_fs {
public:
  int open(const std::string& path, bool create) override {
    int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);
    return ::open(path.c_str(), flags, 0600);
  }

  int close(int handle) override {
    return ::close(handle);
  }

  int64_t pread(int handle, void* data, size_t size, uint64_t offset) override {
    for (;;) {
      auto n = ::pread(handle, data, size, static_cast<off_t>(offset));
      if (n >= 0 || errno != EINTR)
        return n;
    }
  }

  int64_t pwrite(int handle, const void* data, size_t size, uint64_t offset) override {
    for (;;) {
      auto n = ::pwrite(handle, data, size, static_cast<off_t>(offset));
      if (n >= 0 || errno != EINTR)
        return n;
    }
  }

  int fsync(int handle) override {
    // fdatasync is enough for a log: it flushes the data and the metadata
    // needed to read it back (the file size after appends and truncates),
    // skipping only timestamps, which recovery never looks at.
    return ::fdatasync(handle);
  }

  int truncate(int handle, uint64_t size) override {
    return ::ftruncate(handle, static_cast<off_t>(size));
  }

  int64_t size(int handle) override {
    struct stat st {};
    if (::fstat(handle, &st) != 0)
      return -1;
    return st.st_size;
  }

  int list(const std::string& dir, std::vector<std::string>& names) override {
    names.clear();
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr)
      return -1;
    // readdir signals errors only through errno.
    errno = 0;
    while (auto* entry = ::readdir(d)) {
      std::string name = entry->d_name;
      if (name != "." && name != "..")
        names.push_back(std::move(name));
    }
    int err = errno;
    ::closedir(d);
    errno = err;
    return err == 0 ? 0 : -1;
  }

  int remove(const std::string& path) override {
    return ::unlink(path.c_str());
  }

  int sync_dir(const std::string& dir) override {
    // Entries (created and removed names) live in the directory itself: only
    // an fsync of the directory makes them durable.
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
      return -1;
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    errno = err;
    return rc;
  }

  int make_dir(const std::string& dir) override {
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode))
        return 0;
      errno = ENOTDIR;
      return -1;
    }
    auto parent = parent_of(dir);
    if (parent != dir && make_dir(parent) != 0)
      return -1;
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      return -1;
    // The new directory is an entry of its parent: without this a crash
    // could lose the directory with every segment in it.
    return sync_dir(parent);
  }
};

/// One segment file: its first seq (its name) and path.
struct segment {
  uint64_t first_seq = 0;
  std::string path;
};

/// An append waiting for the writer thread.
struct pending_append {
  uint64_t seq = 0;
  uint64_t epoch = 0;
  uint8_t type = 0;
  std::string payload;
  durable_log::append_callback done;
  /// Why the append was refused without being written (too large, log
  /// failed); empty for a record to write.
  std::string refused;
};

} // namespace

std::shared_ptr<log_fs> posix_log_fs() {
  return std::make_shared<posix_fs>();
}

uint32_t crc32c(std::string_view data, uint32_t crc) {
  // Pre- and post-inversion as in the standard CRC-32C, so that a crc of
  // 0 continues from the empty string and crc32c(b, crc32c(a)) == crc32c(a+b).
  crc = ~crc;
  for (unsigned char byte : data)
    crc = crc32c_table[(crc ^ byte) & 0xff] ^ (crc >> 8);
  return ~crc;
}

struct durable_log::impl {
  durable_log_options options;
  log_fs* fs = nullptr;

  // Guarded by `mu`: the queue of appends, seq and epoch assignment, the
  // stop request and the failure.
  mutable std::mutex mu;
  std::condition_variable wake;
  std::vector<pending_append> queue;
  uint64_t next_seq = 1;
  uint64_t epoch = 0;
  bool stopping = false;
  std::string failure_text;
  std::atomic<bool> failed{false};

  // Oldest first; back() is the segment being written. The writer adds at
  // the back (under `segments_mu`), trim_before() removes from the front.
  mutable std::mutex segments_mu;
  std::vector<segment> segments;
  // Serialises trims, so the front entries a trim removes stay the same
  // while it works without holding `segments_mu`.
  std::mutex trim_mu;

  // The writer thread's own state (set up by recover() before it starts).
  int active = -1;
  std::string active_path;
  uint64_t active_size = 0;
  std::string buffer;
  std::thread writer;

  std::atomic<uint64_t> appends{0};
  std::atomic<uint64_t> fsyncs{0};
  std::atomic<uint64_t> segment_count{0};
  std::atomic<uint64_t> bytes{0};

  std::string path_of(uint64_t first_seq) const {
    return options.dir + "/" + segment_name(first_seq);
  }

  std::string recover(log_recovery& recovered);
  std::string create_segment(uint64_t first_seq);
  void run();
  std::string write_batch(const std::vector<pending_append>& batch);
  std::string flush();
  void fail(const std::string& error);
};

std::string durable_log::impl::recover(log_recovery& recovered) {
  recovered = {};
  if (fs->make_dir(options.dir) != 0)
    return failure("create directory", options.dir, errno);
  std::vector<std::string> names;
  if (fs->list(options.dir, names) != 0)
    return failure("list", options.dir, errno);
  std::vector<segment> found;
  for (const auto& name : names) {
    uint64_t first = 0;
    if (parse_segment_name(name, first))
      found.push_back({first, options.dir + "/" + name});
  }
  if (found.empty()) {
    next_seq = 1;
    return create_segment(1);
  }
  std::sort(found.begin(), found.end(),
            [](const segment& a, const segment& b) { return a.first_seq < b.first_seq; });
  // The oldest segment may start anywhere (older ones were trimmed); from
  // there on every seq is the previous one plus one.
  uint64_t expected = found.front().first_seq;
  if (expected == 0)
    return corruption(found.front().path, 0, "segment names seq 0 (seqs start at 1)");
  std::string data;
  for (size_t i = 0; i < found.size(); ++i) {
    const auto& seg = found[i];
    bool last = i + 1 == found.size();
    if (seg.first_seq != expected)
      return corruption(seg.path, 0,
                        "segment starts at seq " + std::to_string(seg.first_seq)
                            + " but the previous segment ends at seq "
                            + std::to_string(expected - 1));
    handle_guard file{*fs, fs->open(seg.path, false)};
    if (file.handle < 0)
      return failure("open", seg.path, errno);
    if (read_all(*fs, file.handle, data) != 0)
      return failure("read", seg.path, errno);
    uint64_t offset = 0;
    while (offset < data.size()) {
      log_record record;
      uint64_t size = 0;
      auto check = check_record(data, offset, options.max_record_bytes, &record, size);
      if (check == record_check::ok) {
        // A checksummed record with the wrong seq was written that way: no
        // torn write explains it.
        if (record.seq != expected)
          return corruption(seg.path, offset,
                            "record has seq " + std::to_string(record.seq) + ", expected "
                                + std::to_string(expected));
        recovered.records.push_back(std::move(record));
        ++expected;
        offset += size;
        continue;
      }
      // Only the last segment can hold a write that a crash interrupted:
      // the writer fsyncs a segment before it creates the next one.
      if (!last)
        return corruption(seg.path, offset, describe(check));
      // A torn write leaves nothing valid behind it. A valid record after
      // the damage means acknowledged data may sit there: refuse to cut it.
      auto later = find_valid_record(data, offset + 1, options.max_record_bytes);
      if (later >= 0)
        return corruption(seg.path, offset,
                          std::string{describe(check)} + ", yet a valid record follows at byte "
                              + std::to_string(later));
      recovered.truncated_bytes = data.size() - offset;
      config::logger("storage")->warn(
          "storage truncates a torn tail of {} bytes from {} at byte {}", recovered.truncated_bytes,
          seg.path, offset);
      if (fs->truncate(file.handle, offset) != 0)
        return failure("truncate", seg.path, errno);
      // Make the cut durable now, so that the recovered log is what is on
      // disk even if the next crash comes before any append's fsync.
      if (fs->fsync(file.handle) != 0)
        return failure("fsync", seg.path, errno);
      data.resize(offset);
      break;
    }
    if (last) {
      active = file.release();
      active_path = seg.path;
      active_size = data.size();
    }
  }
  next_seq = expected;
  segments = std::move(found);
  segment_count = segments.size();
  return {};
}

// Creates the segment whose first record is `first_seq` and makes it the
// active one.
std::string durable_log::impl::create_segment(uint64_t first_seq) {
  auto path = path_of(first_seq);
  int handle = fs->open(path, true);
  if (handle < 0)
    return failure("create", path, errno);
  active = handle;
  active_path = path;
  active_size = 0;
  // The file's name must be durable before a record in it is acknowledged,
  // or a crash could lose the whole file along with acknowledged records.
  if (fs->sync_dir(options.dir) != 0)
    return failure("fsync directory", options.dir, errno);
  std::lock_guard<std::mutex> lock{segments_mu};
  segments.push_back({first_seq, path});
  segment_count = segments.size();
  return {};
}

void durable_log::impl::run() {
  std::vector<pending_append> batch;
  for (;;) {
    std::string failed_before;
    {
      std::unique_lock<std::mutex> lock{mu};
      wake.wait(lock, [this] { return stopping || !queue.empty(); });
      // Stopping drains the queue first: the destructor promises that every
      // pending append is made durable or failed.
      if (queue.empty())
        return;
      batch.swap(queue);
      failed_before = failure_text;
    }
    std::string error;
    if (!failed_before.empty()) {
      error = "durable log failed earlier: " + failed_before;
    } else {
      error = write_batch(batch);
      if (!error.empty())
        fail(error);
    }
    // Callbacks run without the lock: they may append again.
    for (auto& a : batch) {
      if (!a.done)
        continue;
      if (!a.refused.empty())
        a.done(0, a.refused);
      else if (!error.empty())
        a.done(0, error);
      else
        a.done(a.seq, {});
    }
    batch.clear();
  }
}

// Writes a batch: one pwrite per segment it touches, then one fsync of the
// active segment (group commit). Returns the error, or empty when every
// record in the batch is durable.
std::string durable_log::impl::write_batch(const std::vector<pending_append>& batch) {
  buffer.clear();
  uint64_t accepted = 0;
  for (const auto& a : batch) {
    if (!a.refused.empty())
      continue;
    uint64_t size = log_record_header_bytes + a.payload.size();
    uint64_t used = active_size + buffer.size();
    // Roll before the record that would carry the segment past
    // segment_bytes. An empty segment takes any record, so one larger than
    // segment_bytes still gets written (alone).
    if (used > 0 && used + size > options.segment_bytes) {
      if (auto e = flush(); !e.empty())
        return e;
      // The full segment must be durable before the next one exists:
      // recovery only forgives damage in the last segment.
      ++fsyncs;
      if (fs->fsync(active) != 0)
        return failure("fsync", active_path, errno);
      fs->close(active);
      active = -1;
      if (auto e = create_segment(a.seq); !e.empty())
        return e;
    }
    encode_record(buffer, a.seq, a.epoch, a.type, a.payload);
    ++accepted;
  }
  if (accepted == 0)
    return {};
  if (auto e = flush(); !e.empty())
    return e;
  // One fsync for everything the batch wrote to this segment.
  ++fsyncs;
  if (fs->fsync(active) != 0)
    return failure("fsync", active_path, errno);
  appends += accepted;
  return {};
}

// Writes the buffered records at the end of the active segment.
std::string durable_log::impl::flush() {
  if (buffer.empty())
    return {};
  if (write_all(*fs, active, buffer, active_size) != 0)
    return failure("pwrite", active_path, errno);
  active_size += buffer.size();
  bytes += buffer.size();
  buffer.clear();
  return {};
}

void durable_log::impl::fail(const std::string& error) {
  config::logger("storage")->error("storage durable log in {} failed for good: {}", options.dir,
                                   error);
  std::lock_guard<std::mutex> lock{mu};
  failure_text = error;
  failed = true;
}

durable_log::durable_log() : impl_(std::make_unique<impl>()) {}

std::unique_ptr<durable_log> durable_log::open(durable_log_options options, log_recovery& recovered,
                                               std::string& error) {
  error.clear();
  if (!options.fs)
    options.fs = posix_log_fs();
  if (options.dir.empty()) {
    error = "durable log: no directory given";
    return nullptr;
  }
  std::unique_ptr<durable_log> log{new durable_log()};
  auto& d = *log->impl_;
  d.options = std::move(options);
  d.fs = d.options.fs.get();
  error = d.recover(recovered);
  if (!error.empty())
    return nullptr;
  d.writer = std::thread([&d] { d.run(); });
  return log;
}

durable_log::~durable_log() {
  auto& d = *impl_;
  if (d.writer.joinable()) {
    {
      std::lock_guard<std::mutex> lock{d.mu};
      d.stopping = true;
    }
    d.wake.notify_one();
    d.writer.join();
  }
  if (d.active >= 0)
    d.fs->close(d.active);
}

void durable_log::append(uint8_t type, std::string payload, append_callback done) {
  auto& d = *impl_;
  pending_append a;
  a.type = type;
  a.payload = std::move(payload);
  a.done = std::move(done);
  {
    std::lock_guard<std::mutex> lock{d.mu};
    if (a.payload.size() > d.options.max_record_bytes)
      a.refused = "durable log: payload of " + std::to_string(a.payload.size())
                  + " bytes exceeds max_record_bytes " + std::to_string(d.options.max_record_bytes);
    else if (!d.failure_text.empty())
      a.refused = "durable log failed earlier: " + d.failure_text;
    else {
      // Seqs are assigned under the same lock that orders the queue, so the
      // writer sees them in increasing order.
      a.seq = d.next_seq++;
      a.epoch = d.epoch;
    }
    // Refused appends go through the queue too, so every callback runs on
    // the writer thread and in append order.
    d.queue.push_back(std::move(a));
  }
  d.wake.notify_one();
}

uint64_t durable_log::append_sync(uint8_t type, std::string payload, std::string& error) {
  // Shared with the callback, which may still be returning from notify when
  // this function has already returned.
  struct waiter {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    uint64_t seq = 0;
    std::string error;
  };
  auto w = std::make_shared<waiter>();
  append(type, std::move(payload), [w](uint64_t seq, const std::string& e) {
    std::lock_guard<std::mutex> lock{w->mu};
    w->seq = seq;
    w->error = e;
    w->done = true;
    w->cv.notify_one();
  });
  std::unique_lock<std::mutex> lock{w->mu};
  w->cv.wait(lock, [&] { return w->done; });
  error = std::move(w->error);
  return w->seq;
}

void durable_log::set_epoch(uint64_t epoch) {
  std::lock_guard<std::mutex> lock{impl_->mu};
  impl_->epoch = epoch;
}

size_t durable_log::trim_before(uint64_t seq) {
  auto& d = *impl_;
  std::lock_guard<std::mutex> trimming{d.trim_mu};
  std::vector<segment> doomed;
  {
    std::lock_guard<std::mutex> lock{d.segments_mu};
    // A segment's last seq is one before the next segment's first, so every
    // segment but the active one has a known end.
    for (size_t i = 0; i + 1 < d.segments.size() && d.segments[i + 1].first_seq <= seq; ++i)
      doomed.push_back(d.segments[i]);
  }
  size_t removed = 0;
  for (const auto& seg : doomed) {
    if (d.fs->remove(seg.path) != 0 && errno != ENOENT) {
      config::logger("storage")->warn("storage cannot remove trimmed segment {}: {}", seg.path,
                                      std::strerror(errno));
      break;
    }
    ++removed;
    // Oldest first, each removal durable before the next: whatever a crash
    // keeps is still a contiguous run of segments, never one with a gap
    // that recovery would have to call corruption.
    if (d.fs->sync_dir(d.options.dir) != 0) {
      config::logger("storage")->warn("storage cannot fsync directory {} after a trim: {}",
                                      d.options.dir, std::strerror(errno));
      break;
    }
  }
  std::lock_guard<std::mutex> lock{d.segments_mu};
  d.segments.erase(d.segments.begin(), d.segments.begin() + static_cast<ptrdiff_t>(removed));
  d.segment_count = d.segments.size();
  return removed;
}

bool durable_log::failed() const {
  return impl_->failed;
}

uint64_t durable_log::last_seq() const {
  std::lock_guard<std::mutex> lock{impl_->mu};
  return impl_->next_seq - 1;
}

durable_log::stats durable_log::statistics() const {
  stats s;
  s.appends = impl_->appends;
  s.fsyncs = impl_->fsyncs;
  s.segments = impl_->segment_count;
  s.bytes = impl_->bytes;
  return s;
}

} // namespace nimbus::storage
