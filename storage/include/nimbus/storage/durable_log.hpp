#pragma once

/// The durable log under the async queues (and, later, the assignment
/// journal): an append-only sequence of records in segment files, each record
/// checksummed and numbered, made durable with group commit (many appends,
/// one fsync), recovered after a crash by truncating a torn tail, and
/// trimmed from the front once its records are no longer needed.
///
/// On-disk format (little endian), one segment file per range of sequence
/// numbers, named `<first seq, 20 digits>.seg`:
///
///   record := magic u32 | length u32 | crc u32 | seq u64 | epoch u64 |
///             type u8 | payload[length]
///
/// `magic` is log_record_magic, `length` the payload size (at most
/// max_record_bytes), `crc` CRC-32C over seq, epoch, type and payload (the
/// bytes from seq to the end of the record). Sequence numbers start at 1 and
/// increase by one across segments; a segment's name is the seq of its first
/// record (an empty segment is the last one and names the next seq).
///
/// `type` holds the caller's record type (0 to log_record_max_type) in its
/// low 7 bits; its high bit (log_record_batch_end) marks the last record of
/// a batch written to a segment: the writer writes each batch with one
/// pwrite per segment followed by one fsync, and flags the last record of
/// that pwrite. A batch split by a segment roll thus has a flagged record at
/// the end of the old segment (fsynced before the next segment is created)
/// and another at its end in the new segment. The flag is covered by the
/// crc; log_record::type never includes it. Logs written before the flag
/// existed have no flagged records and still read back.
///
/// Recovery: only the last segment can hold damage a crash explains, and in
/// it only the final batch: a batch is written only after the previous one's
/// fsync returned (recovery fsyncs the last segment before anything is
/// written after what it read), and it is acknowledged only after its own
/// fsync (after every part of a batch split by a roll is durable). So at the
/// first damage (an incomplete record, a bad magic, length or checksum) in
/// the last segment, when no later batch follows the damaged one (no valid
/// record after the first flagged record past the damage), the segment is
/// cut back to the end of the last flagged record before the damage (or to
/// its start): the final, never acknowledged batch goes whole, including any
/// valid records of it before the damage and after a hole. When a later
/// batch does follow, the damaged batch was fsynced: that is corruption.
///
/// A last segment without any flagged record is cut to its start in the
/// same way when the segment before it ends with a flagged record (it was
/// begun by a roll and holds only the unfinished first batch). Otherwise it
/// was written before the flag existed, and damage in it is a torn tail only
/// when nothing valid follows it (cut at the damage). So that a segment
/// never holds batches after records without the flag, when the log is
/// opened with a last segment ending in such a record (written before the
/// flag, or whole records of an interrupted batch), the first batch goes
/// into a new segment.
///
/// Damage anywhere else (any bad record in an earlier segment, a checksummed
/// record with the wrong seq, a gap in sequence numbers) is corruption:
/// open() fails and says where, instead of skipping records. Recovery trusts
/// fsynced data to stay as written: damage to acknowledged records at the
/// end of the log with no later batch behind it (for instance the flagged
/// record of the last batch but one, with the last batch whole after it)
/// cannot be told from a torn final batch and is cut like one.
///
/// Failure: once a write or fsync fails, the log is failed for good (no
/// retry of fsync: the kernel may have dropped the dirty pages). Every
/// pending and later append fails; nothing more is acknowledged.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::storage {

/// The first field of every record ("NLR1" in the file's byte order).
inline constexpr uint32_t log_record_magic = 0x31524c4e;

/// Size of a record without its payload: magic, length, crc, seq, epoch, type.
inline constexpr size_t log_record_header_bytes = 4 + 4 + 4 + 8 + 8 + 1;

/// The bit of the on-disk type byte that marks the last record of a batch
/// in its segment (see the format above).
inline constexpr uint8_t log_record_batch_end = 0x80;

/// The largest record type append() accepts (the types below the flag bit).
inline constexpr uint8_t log_record_max_type = 0x7f;

/// The file operations the log uses. The real one is posix_log_fs(); tests
/// substitute layers that lose unsynced writes or fail fsync.
class log_fs {
public:
  virtual ~log_fs() = default;
  /// Opens (optionally creating) a file for reading and writing; returns a
  /// handle >= 0 or -1 (errno set).
  virtual int open(const std::string& path, bool create) = 0;
  virtual int close(int handle) = 0;
  virtual int64_t pread(int handle, void* data, size_t size, uint64_t offset) = 0;
  virtual int64_t pwrite(int handle, const void* data, size_t size, uint64_t offset) = 0;
  virtual int fsync(int handle) = 0;
  virtual int truncate(int handle, uint64_t size) = 0;
  /// Size of the file in bytes, or -1.
  virtual int64_t size(int handle) = 0;
  /// Fills `names` with the names (not paths) of the entries of a
  /// directory; returns 0 or -1 (errno set). An error must not look like an
  /// empty directory: the log would start over at seq 1 beside old segments.
  virtual int list(const std::string& dir, std::vector<std::string>& names) = 0;
  virtual int remove(const std::string& path) = 0;
  /// Makes the directory's entries (created and removed files) durable.
  virtual int sync_dir(const std::string& dir) = 0;
  virtual int make_dir(const std::string& dir) = 0;
};

/// The real file system (POSIX calls, fsync and fdatasync as written).
std::shared_ptr<log_fs> posix_log_fs();

/// One record.
struct log_record {
  uint64_t seq = 0;
  uint64_t epoch = 0;
  /// As appended (0 to log_record_max_type), without the batch-end flag.
  uint8_t type = 0;
  std::string payload;
};

/// Settings of a durable log.
struct durable_log_options {
  /// Directory of the segment files (created if missing).
  std::string dir;
  /// A segment is closed (fsynced) and a new one begun past this size.
  uint64_t segment_bytes = 64ull << 20;
  /// Largest payload accepted.
  uint64_t max_record_bytes = 8ull << 20;
  /// File operations (posix_log_fs() when null).
  std::shared_ptr<log_fs> fs;
};

/// What recovery found.
struct log_recovery {
  /// Records in the log, oldest first.
  std::vector<log_record> records;
  /// Bytes cut off the end of the last segment (a torn write: the final,
  /// never acknowledged batch, with any whole records it left).
  uint64_t truncated_bytes = 0;
};

/// An open durable log. Thread-safe. Appends are made durable by one writer
/// thread that batches everything pending into one write per segment and one
/// fsync (group commit).
class durable_log {
public:
  /// Called once an append is durable (`error` empty, `seq` assigned) or
  /// failed (`error` says why, nothing was acknowledged). Runs on the
  /// writer thread: keep it short (send a message, signal a waiter); it must
  /// not throw nor call append_sync() (that would wait for itself).
  using append_callback = std::function<void(uint64_t seq, const std::string& error)>;

  /// Opens or creates the log and recovers it. On corruption (see above),
  /// or when the directory cannot be used, returns null with `error`.
  static std::unique_ptr<durable_log> open(durable_log_options options, log_recovery& recovered,
                                           std::string& error);

  /// Stops the writer thread after the pending appends are durable (or
  /// failed).
  ~durable_log();

  durable_log(const durable_log&) = delete;
  durable_log& operator=(const durable_log&) = delete;

  /// Queues a record; `done` is called once it is durable or failed.
  /// Records become durable in the order they were appended. A `type` over
  /// log_record_max_type or a payload over max_record_bytes is refused
  /// (`done` gets the error) without failing the log.
  void append(uint8_t type, std::string payload, append_callback done);

  /// Appends and waits until the record is durable. Returns the sequence
  /// number, or 0 with `error` set.
  uint64_t append_sync(uint8_t type, std::string payload, std::string& error);

  /// The epoch stamped on later records (replication; 0 on one node).
  void set_epoch(uint64_t epoch);

  /// Removes whole segments whose records all have seq < `seq` (never the
  /// segment being written). Returns the number of segments removed.
  size_t trim_before(uint64_t seq);

  /// True once a write or fsync failed (see above).
  bool failed() const;

  /// The last sequence number assigned (0 when empty).
  uint64_t last_seq() const;

  /// Counters for metrics and benchmarks.
  struct stats {
    /// Appends made durable (acknowledged) since open.
    uint64_t appends = 0;
    /// fsync calls on segment files since open (not counting directories).
    uint64_t fsyncs = 0;
    /// Segment files in the log now.
    uint64_t segments = 0;
    /// Record bytes written since open.
    uint64_t bytes = 0;
  };
  stats statistics() const;

private:
  durable_log();
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// CRC-32C (Castagnoli) of `data`, continuing from `crc`.
uint32_t crc32c(std::string_view data, uint32_t crc = 0);

} // namespace nimbus::storage
