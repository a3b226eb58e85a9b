#pragma once

/// The embedded chunk store: sealed chunks appended to a few large pack
/// files under the data directory, found through an in-memory index.
///
/// Creating and fsyncing one file per 512 KiB chunk (file_chunk_store, the
/// legacy layout) made the file system the bulk of an ingest's CPU time and
/// a cold read an open/read/close per chunk. Here put() is one append to the
/// current pack, sync() one fdatasync per pack written since the last one,
/// and get() one pread from a descriptor kept open.
///
/// On-disk format (little endian), in `<dir>`:
///
///   pack-<seq, 10 digits>.dat  records, each starting at a multiple of
///                              pack_record_align (4096):
///     record := magic u32 | type u8 | 0 u8[3] | length u32 | id[32] |
///               crc u32 | payload[length] | 0 padding to the alignment
///   pack-<seq>.idx             what the pack holds, for a fast open:
///     entry  := offset u64 | the record's 48-byte header | crc u32 | 0 u32
///   .lock                      held (flock) while a process has the store open
///
/// `magic` is pack_record_magic ("NPK1"); `type` 1 is a chunk (`payload` is
/// the sealed bytes, at most chunk_size + chunk_overhead), 2 a tombstone
/// (`length` 0: the chunk `id` was removed); `crc` is CRC-32C over the header
/// before it. An idx entry's crc covers its offset and header. Records sit
/// on 4 KiB boundaries so that they can be written with O_DIRECT, and so
/// that recovery finds the next record after damage quickly.
///
/// The store's content is the replay of every record of every pack, in pack
/// order and then file order: a chunk record makes its id present (a
/// duplicate of a present id is dead space), a tombstone absent. Sequence
/// numbers are never reused; new records only go to the last pack, which is
/// closed (never written again) once it holds pack_bytes.
///
/// Durability: put() appends without an fsync; sync() fdatasyncs every pack
/// appended to since the last sync (and the directory when a pack was
/// created), then appends the headers of the records it made durable to the
/// packs' idx files without an fsync (an idx is only a shortcut: it never
/// describes bytes that are not durable, each entry is checksummed, and
/// open() scans whatever it does not cover). remove() appends a tombstone
/// and syncs before it returns, so a removed chunk never comes back.
/// Concurrent sync() calls are serialized: one that returns has covered
/// every put() and remove() that returned before it started.
///
/// Recovery (open): for each pack, the idx entries up to the first bad one
/// are taken as they are; the rest of the pack is read record by record,
/// each chunk checked with chunk_id_matches. At damage (an incomplete
/// record, a bad header or a chunk that does not hash to its id) the next
/// valid record is looked for on the following 4 KiB boundaries: when there
/// is one, the damaged bytes are skipped (a warning names them) and
/// nothing valid is dropped; when there is none, the pack is cut there (a
/// torn tail: a process killed mid-append, or writes a machine crash lost
/// before their sync). Packs whose tail was read or cut are fdatasynced
/// before open() returns: chunks a killed process put but never synced may
/// be only in the page cache, and an ingest that finds them skips writing
/// them.
///
/// Space comes back by compaction: when a closed pack's live chunk bytes
/// fall below half its size, a background thread copies its live records to
/// the last pack (and the tombstones that still hide a dead copy of their
/// chunk in another pack), syncs, and only then deletes the old pack. A kill
/// at any point leaves every chunk in at least one durable pack; duplicates
/// are resolved by the replay.
///
/// Legacy data: chunk files of file_chunk_store (`<dir>/<2 hex>/<64 hex>`)
/// found at open are imported (each checked with chunk_id_matches), synced,
/// and then deleted durably, so that a node upgraded in place keeps its code
/// and a chunk removed later can not come back from an old file. A file that
/// fails the check is not imported and stays where it is (a warning names
/// it).
///
/// Failure: a failed fdatasync fails the store for writing for good (the
/// kernel may have dropped the pages; a retry could report success for data
/// that is gone): put(), sync() and remove() then fail until the process
/// opens the store again, which recovers from what is on disk. A failed
/// write (a full disk) is undone and reported; the store stays usable.

#include "nimbus/storage/chunk.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::storage {

/// The first field of every pack record ("NPK1" in the file's byte order).
inline constexpr uint32_t pack_record_magic = 0x314b504e;

/// Size of a record header: magic, type, padding, length, id, crc.
inline constexpr size_t pack_record_header_bytes = 48;

/// Records start at multiples of this (O_DIRECT wants block alignment).
inline constexpr size_t pack_record_align = 4096;

/// Settings of a pack chunk store.
struct pack_store_options {
  /// A pack is closed and the next one begun when a record would take it
  /// past this size (a record larger than that gets a pack of its own).
  uint64_t pack_bytes = 256ull << 20;
  /// Appends with O_DIRECT (falling back to buffered writes where the file
  /// system refuses it, e.g. tmpfs). See code_store_bench for the measured
  /// CPU cost of both.
  bool direct_io = true;
  /// Compacts packs in a background thread; when false only compact() does.
  bool background_compaction = true;
};

/// Counters of a pack chunk store.
struct pack_store_stats {
  /// Pack files, present chunks, and the bytes of the packs on disk.
  uint64_t packs = 0, chunks = 0, pack_bytes = 0;
  /// Bytes of the records of present chunks (headers and padding included).
  uint64_t live_bytes = 0;
  /// Packs compacted away, and damaged bytes skipped or cut off at open.
  uint64_t compactions = 0, damaged_bytes = 0;
  /// Chunks imported from the legacy per-file layout at open.
  uint64_t imported = 0;
  /// True once writes go through O_DIRECT (false after a fallback).
  bool direct_io = false;
};

/// A chunk store in pack files (see the file comment). Thread-safe; reads
/// never wait for a sync() in progress.
class pack_chunk_store final : public chunk_store {
public:
  /// Opens (creating if needed) the store in `dir` and recovers it. Fails
  /// when another process has it open or a pack can not be read.
  static std::shared_ptr<pack_chunk_store>
  open(const std::string& dir, const pack_store_options& options, std::string& error);

  /// Stops the compaction thread (an unfinished compaction is abandoned
  /// safely: its pack stays) and closes the packs. Does not sync.
  ~pack_chunk_store() override;

  pack_chunk_store(const pack_chunk_store&) = delete;
  pack_chunk_store& operator=(const pack_chunk_store&) = delete;

  std::string put(const chunk_id& id, std::string_view sealed) override;
  std::string sync() override;
  std::string get(const chunk_id& id, std::string& sealed) override;
  bool contains(const chunk_id& id) override;
  std::string remove(const chunk_id& id) override;
  std::string list(std::vector<chunk_id>& ids) override;
  bool local() const override;

  /// Compacts every closed pack whose live bytes are below half its size,
  /// now, in the calling thread. Returns the first error.
  std::string compact();

  pack_store_stats statistics() const;

private:
  pack_chunk_store();
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Opens a pack chunk store in `dir` with the default options.
std::shared_ptr<chunk_store> open_pack_chunk_store(const std::string& dir, std::string& error);

} // namespace nimbus::storage
