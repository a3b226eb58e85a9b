#pragma once

/// AES-256-GCM with a random nonce for small records that Nimbus keeps
/// secret at rest: wrapped keys (key_store) and manifests (manifest.cpp).
///
///   sealed = nonce (12 random bytes) || ciphertext || tag (16 bytes)
///
/// A random 96-bit nonce is safe for the number of records one key seals
/// here (one per key rotation or manifest write, far below 2^32).

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace nimbus::storage::detail {

/// Bytes aead_seal adds to its plaintext.
inline constexpr size_t aead_overhead = 12 + 16;

/// Seals `plaintext` under `key`, binding `aad` (authenticated, not stored).
std::string aead_seal(const std::array<uint8_t, 32>& key, std::string_view aad,
                      std::string_view plaintext);

/// Opens what aead_seal produced; false when anything (bytes, key, aad) does
/// not match. `plaintext` is cleared on failure.
bool aead_open(const std::array<uint8_t, 32>& key, std::string_view aad, std::string_view sealed,
               std::string& plaintext);

} // namespace nimbus::storage::detail
