#pragma once

/// Cryptographic digests and byte encodings used across Nimbus: SHA-256 for
/// code hashes and SigV4, HMAC-SHA256 for SigV4 signing keys, and the hex and
/// base64 encodings that AWS APIs put these values in. All of it is OpenSSL.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nimbus::storage {

/// A raw SHA-256 or HMAC-SHA256 digest.
using digest256 = std::array<uint8_t, 32>;

/// Computes SHA-256 of `data`.
digest256 sha256(std::string_view data);

/// Computes SHA-256 of data that arrives in pieces (e.g. a streamed request
/// body). Movable, not copyable.
class sha256_stream {
public:
  sha256_stream();
  ~sha256_stream();
  sha256_stream(sha256_stream&& other) noexcept;
  sha256_stream& operator=(sha256_stream&& other) noexcept;
  sha256_stream(const sha256_stream&) = delete;
  sha256_stream& operator=(const sha256_stream&) = delete;

  /// Adds `data` to the hash.
  void update(std::string_view data);
  /// Returns the digest of everything added; the stream starts over afterwards.
  digest256 finish();

private:
  void* ctx_ = nullptr; // EVP_MD_CTX, kept opaque so OpenSSL stays out of the header
};

/// Computes HMAC-SHA256 of `data` under `key`.
digest256 hmac_sha256(std::string_view key, std::string_view data);

/// Views a digest as a byte string (for chaining HMACs).
std::string_view as_bytes(const digest256& d);

/// Lowercase hex encoding of arbitrary bytes.
std::string to_hex(std::string_view bytes);

/// Lowercase hex encoding of a digest.
std::string to_hex(const digest256& d);

/// Standard base64 (RFC 4648, with padding).
std::string base64_encode(std::string_view bytes);

/// Decodes standard base64; whitespace is not allowed. Returns nothing on any
/// malformed input (bad characters, bad padding, bad length).
std::optional<std::string> base64_decode(std::string_view text);

/// Compares two byte strings in time that depends only on their lengths.
bool constant_time_equal(std::string_view a, std::string_view b);

/// Returns `n` cryptographically random bytes.
std::string random_bytes(size_t n);

/// Returns a random RFC 4122 version 4 UUID in its 36-character text form.
std::string random_uuid();

/// Returns a version 4 UUID for identifiers that must be unique but are not
/// secret (request ids): drawn from a per-thread generator seeded from the
/// OS, so it costs no system call and no lock.
std::string request_uuid();

/// Returns `n` random bytes as 2n hex digits from the same per-thread
/// generator as request_uuid(): unique, not secret (trace ids).
std::string request_hex(size_t n);

/// Appends request_hex(n) to `out` (no temporary string).
void append_request_hex(std::string& out, size_t n);

} // namespace nimbus::storage
