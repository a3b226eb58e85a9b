#pragma once

/// Chunks: the unit in which Nimbus stores, deduplicates, encrypts and lazily
/// loads function code (ARCHITECTURE.md §5).
///
/// An image (a flattened erofs file) is cut into fixed 512 KiB chunks; the
/// last one may be shorter. Each chunk is sealed with convergent encryption:
///
///   key    = HMAC-SHA256(convergence secret, plaintext)
///   sealed = "NCK1" || AES-256-GCM(key, nonce = 12 zero bytes, plaintext) || tag
///   id     = SHA-256(sealed)
///
/// A key encrypts exactly one plaintext (the key is derived from it), so the
/// fixed nonce is never reused with different data. Identical plaintexts under
/// one secret give identical sealed bytes and ids, so they are stored once.
/// Every read checks the GCM tag (CS-2; see open_chunk).

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nimbus::storage {

/// Plaintext bytes per chunk (the last chunk of an image may be shorter).
inline constexpr size_t chunk_size = 512 * 1024;

/// Bytes a sealed chunk adds to its plaintext: magic and GCM tag.
inline constexpr size_t chunk_overhead = 4 + 16;

using chunk_id = std::array<uint8_t, 32>;
using chunk_key = std::array<uint8_t, 32>;
using convergence_secret = std::array<uint8_t, 32>;

/// Lowercase hex of a chunk id (the store's file name).
std::string chunk_id_hex(const chunk_id& id);

/// Parses 64 lowercase hex digits; false on anything else.
bool parse_chunk_id(std::string_view hex, chunk_id& out);

/// Hashes chunk ids for unordered containers (ids are uniformly random).
struct chunk_id_hash {
  size_t operator()(const chunk_id& id) const noexcept;
};

/// What a manifest records per chunk: enough to fetch, verify and decrypt it.
struct chunk_ref {
  chunk_id id{};
  chunk_key key{};
  /// Plaintext length (chunk_size, or less for the last chunk).
  uint32_t size = 0;
  friend bool operator==(const chunk_ref& a, const chunk_ref& b) {
    return a.id == b.id && a.key == b.key && a.size == b.size;
  }
};

/// A sealed chunk ready to be stored.
struct sealed_chunk {
  chunk_ref ref;
  std::string bytes;
};

/// Seals `plaintext` (at most chunk_size bytes) under `secret`.
sealed_chunk seal_chunk(const convergence_secret& secret, std::string_view plaintext);

/// Seals into a caller-owned buffer (reused across calls to save allocations).
chunk_ref seal_chunk_into(const convergence_secret& secret, std::string_view plaintext,
                          std::string& sealed);

/// Seals a stream of chunks (an image's, in order) with the same result as
/// seal_chunk on each, faster: the SHA-256 of chunk i's sealed bytes (its id)
/// runs in lockstep with the HMAC of chunk i+1's plaintext (its key), which
/// do not depend on each other, so with SHA-NI the two hashes cost little
/// more than one. A chunk is therefore complete only when the next one is
/// passed in, or at flush(). Keeps two sealed chunks; not thread-safe.
class chunk_sealer {
public:
  explicit chunk_sealer(const convergence_secret& secret);
  ~chunk_sealer();
  chunk_sealer(const chunk_sealer&) = delete;
  chunk_sealer& operator=(const chunk_sealer&) = delete;

  /// Seals `plaintext` (at most chunk_size bytes; not needed after the
  /// call) and completes the chunk passed before it, which it returns;
  /// nullptr on the first call after construction or flush(). The returned
  /// chunk stays valid until the next call to seal() or flush().
  const sealed_chunk* seal(std::string_view plaintext);

  /// Completes and returns the last chunk passed to seal(); nullptr when
  /// there is none. The sealer can be used again afterwards.
  const sealed_chunk* flush();

private:
  struct state;
  std::unique_ptr<state> state_;
};

/// Seals `plains` with a chunk_sealer into `out` (cleared first), in order.
void seal_chunks(const convergence_secret& secret, const std::vector<std::string_view>& plains,
                 std::vector<sealed_chunk>& out);

/// Verifies `sealed` against `ref` (magic, length, GCM tag) and decrypts it
/// into `plaintext`. Returns an error text naming the chunk id, empty on
/// success; never includes key material.
///
/// This is the check of every read (CS-2): the GCM tag under the key from the
/// (authenticated) manifest fails for any changed, truncated or substituted
/// byte, so wrong bytes are never returned. The SHA-256 id is not recomputed
/// here: it names the sealed bytes for the store, and a store that returned
/// another chunk's bytes fails the tag all the same (two chunks share a key
/// only when they share their plaintext, and then their sealed bytes too).
/// Recomputing it cost more than the decryption on the lazy-loading path.
std::string open_chunk(const chunk_ref& ref, std::string_view sealed, std::string& plaintext);

/// True if `sealed` hashes to `id`: the check a store can make without the
/// key (scrubbing, replication).
bool chunk_id_matches(const chunk_id& id, std::string_view sealed);

/// Where sealed chunks live, addressed by id. The embedded store keeps files
/// under the data directory; the multi-node issue adds chunk servers behind
/// the same interface. Implementations are thread-safe.
class chunk_store {
public:
  virtual ~chunk_store() = default;

  /// Stores a sealed chunk under its id. Storing an id that exists is a no-op.
  /// The chunk need not be durable before sync() returns.
  virtual std::string put(const chunk_id& id, std::string_view sealed) = 0;

  /// Makes every chunk put so far durable (one batch of fsyncs).
  virtual std::string sync() = 0;

  /// Reads a sealed chunk. The error says "not found" when it is missing.
  virtual std::string get(const chunk_id& id, std::string& sealed) = 0;

  virtual bool contains(const chunk_id& id) = 0;

  /// Removes a chunk durably; a missing chunk is not an error.
  virtual std::string remove(const chunk_id& id) = 0;

  /// Lists every stored chunk id.
  virtual std::string list(std::vector<chunk_id>& ids) = 0;

  /// True when reads are served from this machine's own disk or memory, so a
  /// worker's disk cache would only duplicate them.
  virtual bool local() const = 0;
};

/// A chunk store in memory, for tests and benchmarks. Counts its reads.
class memory_chunk_store final : public chunk_store {
public:
  std::string put(const chunk_id& id, std::string_view sealed) override;
  std::string sync() override;
  std::string get(const chunk_id& id, std::string& sealed) override;
  bool contains(const chunk_id& id) override;
  std::string remove(const chunk_id& id) override;
  std::string list(std::vector<chunk_id>& ids) override;
  bool local() const override;

  /// Number of get() calls that found a chunk.
  uint64_t reads() const;
  /// Replaces a stored chunk's bytes (tests: simulate corruption).
  void corrupt(const chunk_id& id, std::string bytes);

private:
  mutable std::mutex mutex_;
  std::unordered_map<chunk_id, std::string, chunk_id_hash> chunks_;
  uint64_t reads_ = 0;
};

} // namespace nimbus::storage
