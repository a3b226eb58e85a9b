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

// Appends one encoded record to `out`. `type` is the on-disk byte: the
// record's type, with log_record_batch_end when it ends a batch.
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
// given; its type without the flag), `size` (header and payload) and
// `batch_end` (the record ends a batch in its segment).
record_check check_record(std::string_view data, uint64_t offset, uint64_t max_payload,
                          log_record* out, uint64_t& size, bool& batch_end) {
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
  auto type = static_cast<uint8_t>(p[type_offset]);
  batch_end = (type & log_record_batch_end) != 0;
  if (out) {
    out->seq = get_u64(p + seq_offset);
    out->epoch = get_u64(p + epoch_offset);
    out->type = static_cast<uint8_t>(type & log_record_max_type);
    out->payload.assign(p + log_record_header_bytes, length);
  }
  return record_check::ok;
}

// The offset of the first valid record at or after `from`, or -1. Used to
// tell a torn tail from corruption.
int64_t find_valid_record(std::string_view data, uint64_t from, uint64_t max_payload) {
  for (uint64_t at = from; at + log_record_header_bytes <= data.size(); ++at) {
    uint64_t size = 0;
    bool batch_end = false;
    if (get_u32(data.data() + at) == log_record_magic
        && check_record(data, at, max_payload, nullptr, size, batch_end) == record_check::ok)
      return static_cast<int64_t>(at);
  }
  return -1;
}

// What follows the first damage in the last segment.
struct after_damage {
  // The first valid record after the damage, or -1.
  int64_t first_valid = -1;
  // The first valid record after the damage that carries the batch-end
  // flag, or -1, and the offset just past it.
  int64_t first_batch_end = -1;
  uint64_t first_batch_end_stop = 0;
  // The first valid record after that one (a later batch), or -1.
  int64_t later_batch = -1;
};

// Walks the valid records after the damage at `damage`: from one valid
// record to the next after its end (records do not overlap, and a payload
// that happens to hold a record is not searched), up to the first flagged
// one; then looks for anything valid after that.
after_damage scan_after_damage(std::string_view data, uint64_t damage, uint64_t max_payload) {
  after_damage out;
  out.first_valid = find_valid_record(data, damage + 1, max_payload);
  for (auto at = out.first_valid; at >= 0;) {
    uint64_t size = 0;
    bool batch_end = false;
    check_record(data, static_cast<uint64_t>(at), max_payload, nullptr, size, batch_end);
    auto stop = static_cast<uint64_t>(at) + size;
    if (batch_end) {
      out.first_batch_end = at;
      out.first_batch_end_stop = stop;
      out.later_batch = find_valid_record(data, stop, max_payload);
      break;
    }
    at = find_valid_record(data, stop, max_payload);
  }
  return out;
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
  // Set by recover() when the last segment ends with a record without the
  // batch-end flag (a log written before the flag existed, or whole records
  // of a batch a crash interrupted): the first batch then goes into a new
  // segment, so that no segment holds batches after unflagged records,
  // which recovery could not tell from the start of an unfinished batch.
  bool roll_before_next_batch = false;
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
  // Whether the last record of the segment before the current one carries
  // the batch-end flag.
  bool previous_ends_batch = false;
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
    // The end of the last flagged record so far (0 when none), with the
    // record count and next seq there: where a torn final batch is cut.
    uint64_t batch_stop = 0;
    size_t records_at_batch_stop = recovered.records.size();
    uint64_t expected_at_batch_stop = expected;
    bool seen_batch_end = false;
    // Whether the last valid record so far carries the flag.
    bool ends_batch = false;
    bool truncated = false;
    while (offset < data.size()) {
      log_record record;
      uint64_t size = 0;
      bool batch_end = false;
      auto check = check_record(data, offset, options.max_record_bytes, &record, size, batch_end);
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
        ends_batch = batch_end;
        if (batch_end) {
          seen_batch_end = true;
          batch_stop = offset;
          records_at_batch_stop = recovered.records.size();
          expected_at_batch_stop = expected;
        }
        continue;
      }
      // Only the last segment can hold a write that a crash interrupted:
      // the writer fsyncs a segment before it creates the next one.
      if (!last)
        return corruption(seg.path, offset, describe(check));
      // Which writes can a crash have left unfinished here? The writer
      // writes a batch (one pwrite per segment), fsyncs, and only then
      // acknowledges it and takes the next batch; a batch split by a roll is
      // acknowledged only after the fsync of its last part, and recovery
      // fsyncs the last segment before anything more is written to it.
      // So only the final batch of the log can be partly on disk, in any
      // order (a hole of zeros or garbage with whole records after it),
      // and none of its records was acknowledged.
      auto after = scan_after_damage(data, offset, options.max_record_bytes);
      uint64_t cut = 0;
      if (seen_batch_end || after.first_batch_end >= 0 || previous_ends_batch) {
        // The damaged batch ends at the first flagged record after the
        // damage (or its end is lost). Anything valid after that end was
        // written by a later batch, after the damaged one was fsynced: the
        // damage hit durable data, which is corruption. Otherwise the
        // damage lies in the final batch: cut back to the end of the last
        // flagged record before it (the end of the last batch that can
        // have been acknowledged), dropping the whole final batch. Its
        // whole records before the damage go too: they were never
        // acknowledged, since nothing of a batch is acknowledged before
        // its last part's fsync returned. (A record whose flag the damage
        // destroyed cannot be told apart: damage to the end of the last
        // batch but one, with the last batch whole after it, is cut like a
        // torn final batch. Recovery trusts fsynced data to stay as it
        // was written, as the rule before the flag did for the last
        // record.)
        //
        // A segment with no flagged record at all counts here only when
        // the previous segment ends with a flagged record: then this
        // segment was begun by a roll of this format, and everything in it
        // belongs to its first batch, which never finished (a finished
        // batch would have left its flagged end).
        if (after.later_batch >= 0)
          return corruption(seg.path, offset,
                            std::string{describe(check)} + ", yet after the end of its batch at byte "
                                + std::to_string(after.first_batch_end)
                                + " a later batch follows at byte "
                                + std::to_string(after.later_batch));
        cut = batch_stop;
        recovered.records.resize(records_at_batch_stop);
        expected = expected_at_batch_stop;
        ends_batch = cut > 0;
      } else {
        // No flagged record at all: a segment written before the flag
        // existed, whose records were acknowledged one batch at a time with
        // nothing on disk to say where batches end (cutting back to the
        // segment start could drop acknowledged records). The rule from
        // before the flag holds: a torn write leaves nothing valid behind
        // it; a valid record after the damage means acknowledged data may
        // sit there: refuse to cut it. (A segment of this format whose
        // first batch lost its end, and that is the first segment left,
        // looks the same and is refused too.)
        if (after.first_valid >= 0)
          return corruption(seg.path, offset,
                            std::string{describe(check)} + ", yet a valid record follows at byte "
                                + std::to_string(after.first_valid));
        cut = offset;
      }
      recovered.truncated_bytes = data.size() - cut;
      config::logger("storage")->warn(
          "storage truncates a torn tail of {} bytes from {} at byte {} ({} at byte {})",
          recovered.truncated_bytes, seg.path, cut, describe(check), offset);
      if (fs->truncate(file.handle, cut) != 0)
        return failure("truncate", seg.path, errno);
      // Make the cut durable now, so that the recovered log is what is on
      // disk even if the next crash comes before any append's fsync.
      if (fs->fsync(file.handle) != 0)
        return failure("fsync", seg.path, errno);
      data.resize(cut);
      truncated = true;
      break;
    }
    if (last) {
      // What was read may be in the page cache only (the previous process
      // was killed before its fsync): make it durable before the next batch
      // is written after it, or a power loss could leave a hole in it with
      // a later batch behind, which recovery would call corruption.
      if (!truncated && !data.empty() && fs->fsync(file.handle) != 0)
        return failure("fsync", seg.path, errno);
      active = file.release();
      active_path = seg.path;
      active_size = data.size();
      roll_before_next_batch = !data.empty() && !ends_batch;
    }
    previous_ends_batch = ends_batch;
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
// active segment (group commit). The last record each pwrite carries gets
// the batch-end flag (see the format in durable_log.hpp). Returns the error,
// or empty when every record in the batch is durable; run() acknowledges
// the batch only then, so no record of it is acknowledged before all of it
// is durable, even when a roll split it.
std::string durable_log::impl::write_batch(const std::vector<pending_append>& batch) {
  buffer.clear();
  uint64_t accepted = 0;
  // The last record taken from the batch, encoded only once it is known
  // whether it ends what the batch writes to its segment.
  const pending_append* held = nullptr;
  uint64_t held_size = 0;
  auto encode_held = [&](bool batch_end) {
    auto type = static_cast<uint8_t>(held->type | (batch_end ? log_record_batch_end : 0));
    encode_record(buffer, held->seq, held->epoch, type, held->payload);
    held = nullptr;
    held_size = 0;
  };
  for (const auto& a : batch) {
    if (!a.refused.empty())
      continue;
    uint64_t size = log_record_header_bytes + a.payload.size();
    uint64_t used = active_size + buffer.size() + held_size;
    // Roll before the record that would carry the segment past
    // segment_bytes. An empty segment takes any record, so one larger than
    // segment_bytes still gets written (alone).
    if (used > 0 && (roll_before_next_batch || used + size > options.segment_bytes)) {
      // The batch's part in the old segment ends here.
      if (held)
        encode_held(true);
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
      roll_before_next_batch = false;
    }
    if (held)
      encode_held(false);
    held = &a;
    held_size = size;
    ++accepted;
  }
  if (accepted == 0)
    return {};
  encode_held(true);
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
    if (type > log_record_max_type)
      // The type byte's high bit is the batch-end flag on disk.
      a.refused = "durable log: record type " + std::to_string(type) + " is over "
                  + std::to_string(log_record_max_type);
    else if (a.payload.size() > d.options.max_record_bytes)
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
