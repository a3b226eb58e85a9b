#include "nimbus/storage/pack_chunk_store.hpp"

#include "nimbus/config/logging.hpp"
#include "nimbus/storage/durable_file.hpp"
#include "nimbus/storage/durable_log.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

namespace nimbus::storage {

namespace {

constexpr uint8_t type_chunk = 1;
constexpr uint8_t type_tombstone = 2;
constexpr size_t max_payload = chunk_size + chunk_overhead;
constexpr size_t idx_entry_bytes = 64;
// Offsets inside a record header (see the format in the header file).
constexpr size_t type_offset = 4;
constexpr size_t length_offset = 8;
constexpr size_t id_offset = 12;
constexpr size_t crc_offset = 44;

uint64_t record_bytes(uint64_t length) {
  return (pack_record_header_bytes + length + pack_record_align - 1) / pack_record_align
         * pack_record_align;
}

// The largest record: a full sealed chunk with its header, aligned.
const size_t max_record_bytes = record_bytes(max_payload);

void put_u32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    p[i] = static_cast<char>(v >> (8 * i));
}

void put_u64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    p[i] = static_cast<char>(v >> (8 * i));
}

uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

struct record_header {
  uint8_t type = 0;
  uint32_t length = 0;
  chunk_id id{};
};

void encode_header(const record_header& h, char* out) {
  std::memset(out, 0, pack_record_header_bytes);
  put_u32(out, pack_record_magic);
  out[type_offset] = static_cast<char>(h.type);
  put_u32(out + length_offset, h.length);
  std::memcpy(out + id_offset, h.id.data(), h.id.size());
  put_u32(out + crc_offset, crc32c(std::string_view{out, crc_offset}));
}

// False for anything but a well-formed header: magic, checksum, a known
// type, zero padding, a payload length within bounds.
bool decode_header(const char* in, record_header& h) {
  if (get_u32(in) != pack_record_magic
      || get_u32(in + crc_offset) != crc32c(std::string_view{in, crc_offset}))
    return false;
  h.type = static_cast<uint8_t>(in[type_offset]);
  h.length = get_u32(in + length_offset);
  std::memcpy(h.id.data(), in + id_offset, h.id.size());
  if (in[5] != 0 || in[6] != 0 || in[7] != 0)
    return false;
  if (h.type == type_chunk)
    return h.length <= max_payload;
  return h.type == type_tombstone && h.length == 0;
}

// What an idx file says about one record.
struct idx_entry {
  uint64_t offset = 0;
  char header[pack_record_header_bytes];
};

void encode_idx_entry(const idx_entry& e, char* out) {
  std::memset(out, 0, idx_entry_bytes);
  put_u64(out, e.offset);
  std::memcpy(out + 8, e.header, pack_record_header_bytes);
  put_u32(out + 8 + pack_record_header_bytes,
          crc32c(std::string_view{out, 8 + pack_record_header_bytes}));
}

std::string short_id(const chunk_id& id) {
  return chunk_id_hex(id).substr(0, 16);
}

std::string failure(std::string_view step, const std::string& path, int err) {
  return std::string{step} + " " + path + ": " + std::strerror(err);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string pack_name(uint32_t seq, std::string_view suffix) {
  char name[32];
  std::snprintf(name, sizeof name, "pack-%010u", seq);
  return name + std::string{suffix};
}

// Parses "pack-<10 digits><suffix>".
bool parse_pack_name(std::string_view name, std::string_view suffix, uint32_t& seq) {
  if (name.size() != 15 + suffix.size() || name.substr(0, 5) != "pack-" || !ends_with(name, suffix))
    return false;
  uint64_t v = 0;
  for (char c : name.substr(5, 10)) {
    if (c < '0' || c > '9')
      return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v == 0 || v > UINT32_MAX)
    return false;
  seq = static_cast<uint32_t>(v);
  return true;
}

bool is_hex_pair(std::string_view name) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  return name.size() == 2 && hex(name[0]) && hex(name[1]);
}

// Reads or writes every byte the vectors describe at `offset`, across short
// transfers and EINTR. Returns the bytes moved (less only at the end of the
// file when reading), or -1 with errno set.
long transfer_full(bool write, int fd, iovec* iov, int count, uint64_t offset) {
  long done = 0;
  while (count > 0) {
    auto n = write ? ::pwritev(fd, iov, count, static_cast<off_t>(offset))
                   : ::preadv(fd, iov, count, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (n == 0) {
      if (write) {
        errno = EIO;
        return -1;
      }
      break;
    }
    done += n;
    offset += static_cast<uint64_t>(n);
    auto left = static_cast<size_t>(n);
    while (count > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --count;
    }
    if (count > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return done;
}

long pread_full(int fd, char* data, size_t size, uint64_t offset) {
  iovec iov{data, size};
  return transfer_full(false, fd, &iov, 1, offset);
}

// A block-aligned buffer for O_DIRECT writes, one per writing thread.
struct aligned_buffer {
  char* data = nullptr;
  aligned_buffer() {
    void* p = nullptr;
    if (::posix_memalign(&p, pack_record_align, max_record_bytes) == 0)
      data = static_cast<char*>(p);
  }
  ~aligned_buffer() {
    std::free(data);
  }
};

const char zero_block[pack_record_align] = {};

} // namespace

struct pack_chunk_store::impl {
  // A pack's descriptors, shared so that a read in progress keeps a pack
  // that compaction deletes readable until it is done.
  struct pack_file {
    uint32_t seq = 0;
    std::string path, idx_path;
    // Buffered, read and write.
    int fd = -1;
    // O_DIRECT writes to the last pack; opened on its first append, closed
    // when the pack is closed. Guarded by append_mutex.
    int direct_fd = -1;
    // The idx file and the bytes of good entries in it; guarded by
    // sync_mutex. Appends stop for good after one fails.
    int idx_fd = -1;
    uint64_t idx_end = 0;
    bool idx_ok = true;

    ~pack_file() {
      for (int f : {fd, direct_fd, idx_fd})
        if (f >= 0)
          ::close(f);
    }
  };

  struct location {
    uint32_t pack = 0;
    uint32_t length = 0;
    uint64_t offset = 0;
  };

  struct pack {
    std::shared_ptr<pack_file> file;
    // Bytes of records (the file's size once every append is done).
    uint64_t end = 0;
    // Record bytes of the chunks present in this pack.
    uint64_t live = 0;
    // Appended to since the last sync() took it.
    bool dirty = false;
    // Records appended and not yet handed to a sync() for the idx.
    std::vector<idx_entry> unindexed;
    // Ids of the tombstones and of the dead chunk records in this pack.
    std::vector<chunk_id> tombstones, dead;
  };

  std::string dir;
  pack_store_options options;
  int lock_fd = -1;

  // Serializes appends (the writes themselves: records go on one after the
  // other); taken before `mutex`.
  std::mutex append_mutex;
  // Serializes sync() (and a compaction's deletion of a pack); taken before
  // `mutex`, never while append_mutex is held.
  std::mutex sync_mutex;
  // One compaction at a time.
  std::mutex compaction_mutex;

  // Guards everything below it; held only briefly (never for I/O).
  mutable std::mutex mutex;
  std::unordered_map<chunk_id, location, chunk_id_hash> index;
  std::map<uint32_t, pack> packs;
  // Packs holding a dead record of a chunk: a tombstone of that chunk must
  // stay (be copied on compaction) while one does.
  std::unordered_map<chunk_id, std::vector<uint32_t>, chunk_id_hash> dead;
  // The pack appended to (the last one; 0 when there is none yet).
  uint32_t current = 0;
  // A pack was created since the last sync().
  bool dir_dirty = false;
  // Set once an fdatasync failed (see the header): why.
  std::string failed;
  // Some closed pack is below half live.
  bool compaction_due = false;
  uint64_t compactions = 0, damaged = 0, imported = 0;

  std::atomic<bool> direct{false};

  // The background compaction thread and its wake-up.
  std::thread compactor;
  std::mutex wake_mutex;
  std::condition_variable wake_cv;
  bool wake_pending = false;
  std::atomic<bool> stopping{false};

  ~impl() {
    if (compactor.joinable()) {
      stopping = true;
      {
        std::lock_guard lock(wake_mutex);
        wake_pending = true;
      }
      wake_cv.notify_one();
      compactor.join();
    }
    if (lock_fd >= 0)
      ::close(lock_fd);
  }

  std::string path_of(uint32_t seq, std::string_view suffix) const {
    return dir + "/" + pack_name(seq, suffix);
  }

  // With `mutex` held: whether a pack is worth compacting.
  bool wants_compaction(uint32_t seq, const pack& p) const {
    // An empty closed pack (its only append failed) goes too.
    return seq != current && (p.end == 0 || p.live * 2 < p.end);
  }

  // With `mutex` held: the record at `loc` of chunk `id` is no longer the
  // one the store serves.
  void mark_dead(const location& loc, const chunk_id& id) {
    auto& p = packs.at(loc.pack);
    p.live -= record_bytes(loc.length);
    p.dead.push_back(id);
    auto& where = dead[id];
    if (std::find(where.begin(), where.end(), loc.pack) == where.end())
      where.push_back(loc.pack);
    if (wants_compaction(loc.pack, p))
      compaction_due = true;
  }

  // With `mutex` held: applies a record as the replay does.
  void apply(uint32_t seq, uint64_t offset, const record_header& h) {
    auto& p = packs.at(seq);
    if (h.type == type_tombstone) {
      p.tombstones.push_back(h.id);
      if (auto i = index.find(h.id); i != index.end()) {
        mark_dead(i->second, h.id);
        index.erase(i);
      }
      return;
    }
    location loc{seq, h.length, offset};
    auto [i, inserted] = index.try_emplace(h.id, loc);
    if (!inserted) {
      mark_dead(i->second, h.id);
      i->second = loc;
    }
    p.live += record_bytes(h.length);
  }

  void wake_compactor() {
    if (!compactor.joinable())
      return;
    {
      std::lock_guard lock(wake_mutex);
      wake_pending = true;
    }
    wake_cv.notify_one();
  }

  // Wakes the compactor when a pack became worth compacting.
  void maybe_wake_compactor() {
    bool due = false;
    {
      std::lock_guard lock(mutex);
      std::swap(due, compaction_due);
    }
    if (due)
      wake_compactor();
  }

  // --- appending ---------------------------------------------------------

  // With append_mutex held: makes a new last pack. Closes the old one's
  // O_DIRECT descriptor (it is never written again).
  std::string roll() {
    uint32_t seq;
    std::shared_ptr<pack_file> old;
    {
      std::lock_guard lock(mutex);
      seq = current + 1;
      if (current != 0)
        old = packs.at(current).file;
    }
    auto file = std::make_shared<pack_file>();
    file->seq = seq;
    file->path = path_of(seq, ".dat");
    file->idx_path = path_of(seq, ".idx");
    file->fd = ::open(file->path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (file->fd < 0)
      return failure("create", file->path, errno);
    if (old && old->direct_fd >= 0) {
      ::close(old->direct_fd);
      old->direct_fd = -1;
    }
    bool due = false;
    {
      std::lock_guard lock(mutex);
      packs[seq].file = std::move(file);
      auto closed = current;
      current = seq;
      dir_dirty = true;
      // Closing a pack makes it a candidate when removals emptied it while
      // it was the last one.
      due = closed != 0 && wants_compaction(closed, packs.at(closed));
    }
    if (due)
      wake_compactor();
    return {};
  }

  // Writes a record at `offset` with O_DIRECT. Returns false (errno set) on
  // failure; errno EINVAL means the file system refuses O_DIRECT.
  bool write_direct(pack_file& file, const char* header, std::string_view payload,
                    uint64_t offset) {
    thread_local aligned_buffer buffer;
    if (buffer.data == nullptr) {
      errno = EINVAL;
      return false;
    }
    if (file.direct_fd < 0) {
      file.direct_fd = ::open(file.path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
      if (file.direct_fd < 0)
        return false;
    }
    auto size = record_bytes(payload.size());
    std::memcpy(buffer.data, header, pack_record_header_bytes);
    std::memcpy(buffer.data + pack_record_header_bytes, payload.data(), payload.size());
    auto used = pack_record_header_bytes + payload.size();
    std::memset(buffer.data + used, 0, size - used);
    iovec iov{buffer.data, size};
    return transfer_full(true, file.direct_fd, &iov, 1, offset) == static_cast<long>(size);
  }

  bool write_buffered(pack_file& file, const char* header, std::string_view payload,
                      uint64_t offset) {
    auto size = record_bytes(payload.size());
    iovec iov[3] = {
        {const_cast<char*>(header), pack_record_header_bytes},
        {const_cast<char*>(payload.data()), payload.size()},
        {const_cast<char*>(zero_block), size - pack_record_header_bytes - payload.size()}};
    return transfer_full(true, file.fd, iov, 3, offset) == static_cast<long>(size);
  }

  // With append_mutex held: appends one record to the last pack (rolling
  // first when it is full) and then, under `mutex`, accounts for it and
  // calls `written` with the pack and the record's offset.
  std::string append(const record_header& h, std::string_view payload,
                     const std::function<void(pack&, uint64_t)>& written) {
    auto size = record_bytes(payload.size());
    bool need_roll;
    {
      std::lock_guard lock(mutex);
      if (!failed.empty())
        return failed;
      need_roll =
          current == 0
          || (packs.at(current).end > 0 && packs.at(current).end + size > options.pack_bytes);
    }
    if (need_roll)
      if (auto e = roll(); !e.empty())
        return e;
    std::shared_ptr<pack_file> file;
    uint64_t offset;
    {
      std::lock_guard lock(mutex);
      auto& p = packs.at(current);
      file = p.file;
      offset = p.end;
    }
    idx_entry entry;
    entry.offset = offset;
    encode_header(h, entry.header);
    bool ok = false;
    if (direct.load(std::memory_order_relaxed)) {
      ok = write_direct(*file, entry.header, payload, offset);
      if (!ok && errno == EINVAL) {
        // Not supported here after all (tmpfs, some FUSE file systems):
        // buffered from now on.
        direct.store(false, std::memory_order_relaxed);
        config::logger("storage")->info("pack store {}: O_DIRECT refused, writing buffered", dir);
      } else if (!ok) {
        auto err = errno;
        (void)::ftruncate(file->fd, static_cast<off_t>(offset));
        return failure("write", file->path, err);
      }
    }
    if (!ok && !write_buffered(*file, entry.header, payload, offset)) {
      // Undo a partial record (a full disk); the next append writes over
      // whatever stays.
      auto err = errno;
      (void)::ftruncate(file->fd, static_cast<off_t>(offset));
      return failure("write", file->path, err);
    }
    std::lock_guard lock(mutex);
    auto& p = packs.at(file->seq);
    p.end = offset + size;
    p.dirty = true;
    p.unindexed.push_back(entry);
    written(p, offset);
    return {};
  }

  // --- sync --------------------------------------------------------------

  // Fails the store for writing for good (see the header).
  std::string fail(std::string why) {
    config::logger("storage")->error("pack store {} failed for good: {}", dir, why);
    std::lock_guard lock(mutex);
    if (failed.empty())
      failed = "pack store failed: " + why;
    return failed;
  }

  // With sync_mutex held.
  std::string sync_locked() {
    struct batch_item {
      std::shared_ptr<pack_file> file;
      std::vector<idx_entry> entries;
    };
    std::vector<batch_item> batch;
    bool sync_dir = false;
    {
      std::lock_guard lock(mutex);
      if (!failed.empty())
        return failed;
      for (auto& [seq, p] : packs) {
        if (!p.dirty)
          continue;
        batch.push_back({p.file, std::move(p.unindexed)});
        p.unindexed.clear();
        p.dirty = false;
      }
      std::swap(sync_dir, dir_dirty);
    }
    for (auto& item : batch)
      if (::fdatasync(item.file->fd) != 0)
        return fail(failure("fdatasync", item.file->path, errno));
    if (sync_dir)
      if (auto s = fsync_directory(dir); !s.ok())
        return fail(s.error);
    for (auto& item : batch)
      write_idx(*item.file, item.entries);
    return {};
  }

  // With sync_mutex held (or at open): appends entries for durable records
  // to a pack's idx. Not fsynced: a lost or torn idx only makes the next
  // open read more of the pack.
  void write_idx(pack_file& file, const std::vector<idx_entry>& entries) {
    if (!file.idx_ok || entries.empty())
      return;
    if (file.idx_fd < 0) {
      file.idx_fd = ::open(file.idx_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (file.idx_fd < 0) {
        file.idx_ok = false;
        config::logger("storage")->warn("pack store: {}", failure("open", file.idx_path, errno));
        return;
      }
    }
    std::string bytes(entries.size() * idx_entry_bytes, '\0');
    for (size_t i = 0; i < entries.size(); ++i)
      encode_idx_entry(entries[i], bytes.data() + i * idx_entry_bytes);
    iovec iov{bytes.data(), bytes.size()};
    if (transfer_full(true, file.idx_fd, &iov, 1, file.idx_end)
        != static_cast<long>(bytes.size())) {
      file.idx_ok = false;
      config::logger("storage")->warn("pack store: {}", failure("write", file.idx_path, errno));
      return;
    }
    file.idx_end += bytes.size();
  }

  // --- reading -----------------------------------------------------------

  // Reads the record of `id` at `loc` into `sealed`, checking its header.
  std::string read_record(const pack_file& file, const location& loc, const chunk_id& id,
                          std::string& sealed) {
    char header[pack_record_header_bytes];
    sealed.resize(loc.length);
    iovec iov[2] = {{header, sizeof header}, {sealed.data(), sealed.size()}};
    auto want = static_cast<long>(sizeof header + sealed.size());
    auto got = transfer_full(false, file.fd, iov, 2, loc.offset);
    if (got < 0)
      return failure("read", file.path, errno);
    record_header h;
    if (got != want || !decode_header(header, h) || h.type != type_chunk || h.id != id
        || h.length != loc.length) {
      sealed.clear();
      return "chunk " + short_id(id) + ": bad record in " + file.path + " at offset "
             + std::to_string(loc.offset);
    }
    return {};
  }

  // --- compaction --------------------------------------------------------

  // Copies pack `seq`'s live records (and the tombstones still needed) to
  // the last pack, syncs, and deletes it. Abandoned safely when stopping.
  std::string compact_pack(uint32_t seq) {
    std::vector<std::pair<chunk_id, location>> live;
    std::vector<chunk_id> tombstones;
    std::shared_ptr<pack_file> file;
    {
      std::lock_guard lock(mutex);
      auto i = packs.find(seq);
      if (i == packs.end() || !wants_compaction(seq, i->second))
        return {};
      for (auto& [id, loc] : index)
        if (loc.pack == seq)
          live.emplace_back(id, loc);
      tombstones = i->second.tombstones;
      file = i->second.file;
    }
    std::sort(live.begin(), live.end(),
              [](const auto& a, const auto& b) { return a.second.offset < b.second.offset; });
    std::string sealed;
    uint64_t copied = 0;
    for (auto& [id, loc] : live) {
      if (stopping)
        return {};
      if (auto e = read_record(*file, loc, id, sealed); !e.empty())
        return e;
      std::lock_guard append_lock(append_mutex);
      {
        // Removed (or moved) meanwhile: nothing to copy.
        std::lock_guard lock(mutex);
        auto i = index.find(id);
        if (i == index.end() || i->second.pack != seq || i->second.offset != loc.offset)
          continue;
      }
      record_header h{type_chunk, loc.length, id};
      auto e = append(h, sealed, [&](pack& p, uint64_t offset) {
        auto i = index.find(id);
        mark_dead(i->second, id);
        i->second = location{p.file->seq, loc.length, offset};
        p.live += record_bytes(loc.length);
      });
      if (!e.empty())
        return e;
      ++copied;
    }
    uint64_t kept = 0;
    for (auto& id : tombstones) {
      if (stopping)
        return {};
      std::lock_guard append_lock(append_mutex);
      {
        // A tombstone matters while its chunk is absent and a dead copy of
        // it sits in another pack (older ones would come back without it).
        std::lock_guard lock(mutex);
        if (index.count(id) != 0)
          continue;
        auto d = dead.find(id);
        if (d == dead.end()
            || std::none_of(d->second.begin(), d->second.end(),
                            [&](uint32_t other) { return other != seq; }))
          continue;
      }
      record_header h{type_tombstone, 0, id};
      auto e = append(h, {}, [&](pack& p, uint64_t) { p.tombstones.push_back(id); });
      if (!e.empty())
        return e;
      ++kept;
    }
    std::lock_guard sync_lock(sync_mutex);
    // The copies are durable before the original goes.
    if (auto e = sync_locked(); !e.empty())
      return e;
    uint64_t freed = 0;
    {
      std::lock_guard lock(mutex);
      auto& p = packs.at(seq);
      if (p.live != 0)
        return "pack store: " + file->path + " still has live records after compaction";
      freed = p.end;
    }
    // The pack stays known (its dead records keep their tombstones) until
    // its file is gone.
    if (::unlink(file->path.c_str()) != 0 && errno != ENOENT)
      return failure("unlink", file->path, errno);
    if (::unlink(file->idx_path.c_str()) != 0 && errno != ENOENT)
      config::logger("storage")->warn("pack store: {}", failure("unlink", file->idx_path, errno));
    {
      std::lock_guard lock(mutex);
      auto& p = packs.at(seq);
      for (auto& id : p.dead) {
        auto d = dead.find(id);
        if (d == dead.end())
          continue;
        d->second.erase(std::remove(d->second.begin(), d->second.end(), seq), d->second.end());
        if (d->second.empty())
          dead.erase(d);
      }
      packs.erase(seq);
      ++compactions;
    }
    if (auto s = fsync_directory(dir); !s.ok())
      return fail(s.error);
    config::logger("storage")->info(
        "pack store {}: compacted {} ({} chunks and {} tombstones copied, {} bytes freed)", dir,
        pack_name(seq, ".dat"), copied, kept, freed);
    return {};
  }

  // Compacts every pack worth it. Returns the first error.
  std::string compact_all() {
    std::lock_guard compaction_lock(compaction_mutex);
    std::vector<uint32_t> candidates;
    {
      std::lock_guard lock(mutex);
      compaction_due = false;
      for (auto& [seq, p] : packs)
        if (wants_compaction(seq, p))
          candidates.push_back(seq);
    }
    std::string first;
    for (auto seq : candidates) {
      if (stopping)
        break;
      if (auto e = compact_pack(seq); !e.empty() && first.empty())
        first = e;
    }
    return first;
  }

  void compactor_loop() {
    for (;;) {
      {
        std::unique_lock lock(wake_mutex);
        wake_cv.wait(lock, [&] { return wake_pending; });
        wake_pending = false;
      }
      if (stopping)
        return;
      if (auto e = compact_all(); !e.empty())
        config::logger("storage")->warn("pack store {}: compaction: {}", dir, e);
    }
  }

  // --- open --------------------------------------------------------------

  // Reads one pack: its idx, then the rest record by record (see the
  // recovery rules in the header). `entries` gets every record found.
  std::string load_pack(uint32_t seq, bool& rewrite_idx, bool& needs_sync) {
    auto file = std::make_shared<pack_file>();
    file->seq = seq;
    file->path = path_of(seq, ".dat");
    file->idx_path = path_of(seq, ".idx");
    file->fd = ::open(file->path.c_str(), O_RDWR | O_CLOEXEC);
    if (file->fd < 0)
      return failure("open", file->path, errno);
    struct stat st {};
    if (::fstat(file->fd, &st) != 0)
      return failure("stat", file->path, errno);
    auto size = static_cast<uint64_t>(st.st_size);
    {
      std::lock_guard lock(mutex);
      packs[seq].file = file;
    }
    std::vector<idx_entry> entries;
    uint64_t covered = 0;
    std::string idx;
    rewrite_idx = false;
    if (auto s = read_file(file->idx_path, idx); s.ok()) {
      size_t at = 0;
      for (; at + idx_entry_bytes <= idx.size(); at += idx_entry_bytes) {
        const char* e = idx.data() + at;
        record_header h;
        idx_entry entry;
        entry.offset = get_u64(e);
        if (get_u32(e + 8 + pack_record_header_bytes)
                != crc32c(std::string_view{e, 8 + pack_record_header_bytes})
            || !decode_header(e + 8, h) || entry.offset < covered
            || entry.offset % pack_record_align != 0
            || entry.offset + record_bytes(h.length) > size)
          break;
        std::memcpy(entry.header, e + 8, pack_record_header_bytes);
        entries.push_back(entry);
        covered = entry.offset + record_bytes(h.length);
        std::lock_guard lock(mutex);
        apply(seq, entry.offset, h);
      }
      if (at != idx.size())
        rewrite_idx = true;
      file->idx_end = at;
    } else if (size > 0) {
      rewrite_idx = true;
    }
    // The rest: verified record by record.
    std::string payload;
    auto valid_at = [&](uint64_t pos, record_header& h, idx_entry& entry) {
      if (pos + pack_record_header_bytes > size)
        return false;
      if (pread_full(file->fd, entry.header, pack_record_header_bytes, pos)
          != static_cast<long>(pack_record_header_bytes))
        return false;
      if (!decode_header(entry.header, h) || pos + record_bytes(h.length) > size)
        return false;
      entry.offset = pos;
      if (h.type == type_tombstone)
        return true;
      payload.resize(h.length);
      return pread_full(file->fd, payload.data(), payload.size(), pos + pack_record_header_bytes)
                 == static_cast<long>(payload.size())
             && chunk_id_matches(h.id, payload);
    };
    uint64_t pos = covered;
    while (pos < size) {
      record_header h;
      idx_entry entry;
      if (!valid_at(pos, h, entry)) {
        uint64_t next = pos + pack_record_align;
        while (next < size && !valid_at(next, h, entry))
          next += pack_record_align;
        if (next >= size) {
          // Nothing valid follows: a torn tail.
          config::logger("storage")->warn("pack store: {}: cutting {} bytes of a torn tail at {}",
                                          file->path, size - pos, pos);
          if (::ftruncate(file->fd, static_cast<off_t>(pos)) != 0)
            return failure("truncate", file->path, errno);
          damaged += size - pos;
          size = pos;
          needs_sync = true;
          break;
        }
        config::logger("storage")->warn("pack store: {}: skipping {} damaged bytes at {}",
                                        file->path, next - pos, pos);
        damaged += next - pos;
        pos = next;
      }
      entries.push_back(entry);
      {
        std::lock_guard lock(mutex);
        apply(seq, pos, h);
      }
      pos += record_bytes(h.length);
      rewrite_idx = true;
      needs_sync = true;
    }
    {
      std::lock_guard lock(mutex);
      packs.at(seq).end = size;
    }
    if (rewrite_idx) {
      std::string bytes(entries.size() * idx_entry_bytes, '\0');
      for (size_t i = 0; i < entries.size(); ++i)
        encode_idx_entry(entries[i], bytes.data() + i * idx_entry_bytes);
      pending_idx.emplace_back(file, std::move(bytes));
    }
    return {};
  }

  // Idx files to rewrite whole once their packs are synced (open only).
  std::vector<std::pair<std::shared_ptr<pack_file>, std::string>> pending_idx;

  std::string import_legacy(const std::vector<std::string>& subdirs, pack_chunk_store& store) {
    std::vector<std::string> done;
    std::vector<std::string> names;
    std::string bytes;
    for (auto& sub : subdirs) {
      auto sub_path = dir + "/" + sub;
      if (auto s = list_directory(sub_path, names); !s.ok())
        return s.error;
      for (auto& name : names) {
        auto path = sub_path + "/" + name;
        if (ends_with(name, temp_suffix)) {
          done.push_back(path);
          continue;
        }
        chunk_id id;
        if (!parse_chunk_id(name, id) || name.substr(0, 2) != sub)
          continue;
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0)
          return failure("stat", path, errno);
        bool ok = static_cast<uint64_t>(st.st_size) <= max_payload;
        if (ok) {
          if (auto s = read_file(path, bytes); !s.ok())
            return s.error;
          ok = chunk_id_matches(id, bytes);
        }
        if (!ok) {
          config::logger("storage")->warn(
              "pack store: legacy chunk file {} does not match its id; not imported", path);
          continue;
        }
        if (auto e = store.put(id, bytes); !e.empty())
          return e;
        ++imported;
        done.push_back(path);
      }
    }
    if (done.empty())
      return {};
    // Durable in packs before the files go; the files go durably before
    // anything can remove a chunk (an old file must not bring it back).
    if (auto e = store.sync(); !e.empty())
      return e;
    for (auto& path : done)
      if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return failure("unlink", path, errno);
    bool removed_dir = false;
    for (auto& sub : subdirs) {
      auto sub_path = dir + "/" + sub;
      if (auto s = fsync_directory(sub_path); !s.ok())
        return s.error;
      if (::rmdir(sub_path.c_str()) == 0)
        removed_dir = true;
    }
    if (removed_dir)
      if (auto s = fsync_directory(dir); !s.ok())
        return s.error;
    config::logger("storage")->info("pack store {}: imported {} chunks of the legacy layout", dir,
                                    imported);
    return {};
  }

  std::string open(pack_chunk_store& store) {
    if (auto s = make_directories(dir); !s.ok())
      return s.error;
    // Two processes appending to one pack would interleave records.
    auto lock_path = dir + "/.lock";
    lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0)
      return failure("open", lock_path, errno);
    if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0)
      return errno == EWOULDBLOCK ? std::string{"open in another process"}
                                  : failure("flock", lock_path, errno);
    std::vector<std::string> names;
    if (auto s = list_directory(dir, names); !s.ok())
      return s.error;
    std::vector<uint32_t> seqs, idx_seqs;
    std::vector<std::string> legacy;
    for (auto& name : names) {
      uint32_t seq;
      if (ends_with(name, temp_suffix)) {
        // An index rewrite (write_file_atomic) that a crash cut short before
        // its rename: never valid, only in the way.
        if (auto s = remove_file_durable(dir + "/" + name); !s.ok())
          return s.error;
      } else if (parse_pack_name(name, ".dat", seq))
        seqs.push_back(seq);
      else if (parse_pack_name(name, ".idx", seq))
        idx_seqs.push_back(seq);
      else if (is_hex_pair(name))
        legacy.push_back(name);
    }
    std::sort(seqs.begin(), seqs.end());
    std::sort(legacy.begin(), legacy.end());
    bool any_sync = false;
    std::vector<std::shared_ptr<pack_file>> to_sync;
    for (auto seq : seqs) {
      bool rewrite = false, needs_sync = false;
      if (auto e = load_pack(seq, rewrite, needs_sync); !e.empty())
        return e;
      if (needs_sync) {
        std::lock_guard lock(mutex);
        to_sync.push_back(packs.at(seq).file);
      }
    }
    // An idx whose pack is gone (compaction deleted the pack first).
    for (auto seq : idx_seqs)
      if (!std::binary_search(seqs.begin(), seqs.end(), seq))
        if (auto s = remove_file_durable(path_of(seq, ".idx")); !s.ok())
          return s.error;
    {
      std::lock_guard lock(mutex);
      current = seqs.empty() ? 0 : seqs.back();
      compaction_due = false;
      for (auto& [seq, p] : packs)
        if (wants_compaction(seq, p))
          compaction_due = true;
    }
    // What a killed process wrote may be only in the page cache.
    for (auto& file : to_sync) {
      if (::fdatasync(file->fd) != 0)
        return failure("fdatasync", file->path, errno);
      any_sync = true;
    }
    if (any_sync)
      if (auto s = fsync_directory(dir); !s.ok())
        return s.error;
    for (auto& [file, bytes] : pending_idx) {
      auto s = write_file_atomic(file->idx_path, bytes);
      file->idx_end = bytes.size();
      if (!s.ok()) {
        file->idx_ok = false;
        config::logger("storage")->warn("pack store: {}", s.error);
      }
    }
    pending_idx.clear();
    if (!legacy.empty())
      if (auto e = import_legacy(legacy, store); !e.empty())
        return e;
    if (options.background_compaction) {
      compactor = std::thread([this] { compactor_loop(); });
      maybe_wake_compactor();
    }
    return {};
  }
};

pack_chunk_store::pack_chunk_store() : impl_(std::make_unique<impl>()) {}

pack_chunk_store::~pack_chunk_store() = default;

std::shared_ptr<pack_chunk_store> pack_chunk_store::open(const std::string& dir,
                                                         const pack_store_options& options,
                                                         std::string& error) {
  error.clear();
  std::shared_ptr<pack_chunk_store> store{new pack_chunk_store()};
  store->impl_->dir = dir;
  store->impl_->options = options;
  store->impl_->direct = options.direct_io;
  if (auto e = store->impl_->open(*store); !e.empty()) {
    error = "pack store " + dir + ": " + e;
    return nullptr;
  }
  return store;
}

std::string pack_chunk_store::put(const chunk_id& id, std::string_view sealed) {
  if (sealed.size() > max_payload)
    return "chunk " + short_id(id) + ": larger than a sealed chunk";
  auto& s = *impl_;
  std::lock_guard append_lock(s.append_mutex);
  {
    std::lock_guard lock(s.mutex);
    if (s.index.count(id) != 0)
      return {};
  }
  record_header h{type_chunk, static_cast<uint32_t>(sealed.size()), id};
  return s.append(h, sealed, [&](impl::pack& p, uint64_t offset) {
    s.index.emplace(id, impl::location{p.file->seq, h.length, offset});
    p.live += record_bytes(h.length);
  });
}

std::string pack_chunk_store::sync() {
  std::lock_guard sync_lock(impl_->sync_mutex);
  return impl_->sync_locked();
}

std::string pack_chunk_store::get(const chunk_id& id, std::string& sealed) {
  auto& s = *impl_;
  impl::location loc;
  std::shared_ptr<impl::pack_file> file;
  {
    std::lock_guard lock(s.mutex);
    auto i = s.index.find(id);
    if (i == s.index.end())
      return "chunk " + short_id(id) + ": not found";
    loc = i->second;
    file = s.packs.at(loc.pack).file;
  }
  return s.read_record(*file, loc, id, sealed);
}

bool pack_chunk_store::contains(const chunk_id& id) {
  std::lock_guard lock(impl_->mutex);
  return impl_->index.count(id) != 0;
}

std::string pack_chunk_store::remove(const chunk_id& id) {
  auto& s = *impl_;
  {
    std::lock_guard append_lock(s.append_mutex);
    bool present;
    {
      std::lock_guard lock(s.mutex);
      present = s.index.count(id) != 0;
    }
    // Absent: still sync, so that a tombstone another remove() of the same
    // chunk is still making durable is durable when this one returns.
    if (present) {
      record_header h{type_tombstone, 0, id};
      auto e = s.append(h, {}, [&](impl::pack& p, uint64_t) {
        p.tombstones.push_back(id);
        auto i = s.index.find(id);
        s.mark_dead(i->second, id);
        s.index.erase(i);
      });
      if (!e.empty())
        return e;
    }
  }
  auto e = sync();
  s.maybe_wake_compactor();
  return e;
}

std::string pack_chunk_store::list(std::vector<chunk_id>& ids) {
  std::lock_guard lock(impl_->mutex);
  ids.clear();
  ids.reserve(impl_->index.size());
  for (auto& [id, loc] : impl_->index)
    ids.push_back(id);
  return {};
}

bool pack_chunk_store::local() const {
  return true;
}

std::string pack_chunk_store::compact() {
  return impl_->compact_all();
}

pack_store_stats pack_chunk_store::statistics() const {
  auto& s = *impl_;
  std::lock_guard lock(s.mutex);
  pack_store_stats out;
  out.packs = s.packs.size();
  out.chunks = s.index.size();
  for (auto& [seq, p] : s.packs) {
    out.pack_bytes += p.end;
    out.live_bytes += p.live;
  }
  out.compactions = s.compactions;
  out.damaged_bytes = s.damaged;
  out.imported = s.imported;
  out.direct_io = s.direct.load();
  return out;
}

std::shared_ptr<chunk_store> open_pack_chunk_store(const std::string& dir, std::string& error) {
  return pack_chunk_store::open(dir, pack_store_options{}, error);
}

} // namespace nimbus::storage
