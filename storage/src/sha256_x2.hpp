#pragma once

/// SHA-256 and HMAC-SHA256 that can hash two independent streams at once.
///
/// The SHA-NI round instruction is latency-bound: one stream leaves most of
/// the unit idle, so interleaving the rounds of two unrelated messages costs
/// little more than hashing one. Chunk sealing has such pairs: the HMAC of
/// chunk i+1's plaintext (its key) and the SHA-256 of chunk i's sealed bytes
/// (its id) do not depend on each other (see chunk_sealer in chunk.hpp).
///
/// Without SHA-NI (checked once at run time) every block goes through
/// OpenSSL's own block function instead; the results are the same.
/// Internal to nimbus::storage.

#include <array>
#include <cstddef>
#include <cstdint>

namespace nimbus::storage {

/// A SHA-256 computation in progress: chaining value, bytes fed so far and
/// the partial block (length % 64 bytes of it are used).
struct sha256_state {
  std::array<uint32_t, 8> h{};
  uint64_t length = 0;
  std::array<uint8_t, 64> block{};
};

/// HMAC-SHA256 in progress: the inner hash (feed the message into it) and
/// the outer hash with its key block already absorbed.
struct hmac_sha256_state {
  sha256_state inner;
  sha256_state outer;
};

void sha256_init(sha256_state& s);

/// Feeds `n` bytes.
void sha256_update(sha256_state& s, const void* data, size_t n);

/// Feeds `na` bytes to `a` and `nb` bytes to `b`; the full blocks the two
/// have in common are compressed in lockstep. `a` and `b` must be distinct.
void sha256_update2(sha256_state& a, const void* data_a, size_t na, sha256_state& b,
                    const void* data_b, size_t nb);

/// Pads, writes the digest and leaves `s` unusable until sha256_init.
void sha256_finish(sha256_state& s, uint8_t out[32]);

/// Starts HMAC-SHA256 under `key` (keys longer than a block are hashed
/// first, as RFC 2104 says).
void hmac_sha256_init(hmac_sha256_state& s, const void* key, size_t key_len);

/// Writes the MAC of everything fed into `s.inner`.
void hmac_sha256_finish(hmac_sha256_state& s, uint8_t out[32]);

/// True when blocks are compressed with SHA-NI (CPU support and not forced
/// off by sha256_force_portable).
bool sha256_uses_sha_ni();

/// Test hook: true forces OpenSSL's block function even on SHA-NI CPUs.
void sha256_force_portable(bool on);

} // namespace nimbus::storage
