#pragma once

/// Image manifests: which chunks make an image, sealed under the owning
/// account's data key (ARCHITECTURE.md §5).
///
/// Plain encoding (little-endian, nothing trailing):
///
///   "NMF1" | version u32 (1) | image size u64 | chunk count u32 |
///   count x ( chunk id [32] | chunk key [32] | plaintext size u32 )
///
/// The count must be ceil(size / chunk_size); every chunk holds chunk_size
/// bytes except the last, which holds the rest. Sealed form:
///
///   nonce (12 random bytes) || AES-256-GCM(data key, plain encoding) || tag
///
/// with AAD = "<account>/<name>", so a manifest moved to another name or
/// another account fails to open.

#include "nimbus/storage/chunk.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::storage {

/// An image: its size and its chunks in order.
struct image_manifest {
  uint64_t size = 0;
  std::vector<chunk_ref> chunks;
};

/// The plain encoding (holds chunk keys: never store or send it unsealed).
std::string encode_manifest(const image_manifest& manifest);

/// Parses the plain encoding strictly. Returns an error text, empty on success.
std::string decode_manifest(std::string_view bytes, image_manifest& out);

/// Encodes and seals a manifest under `key` with `aad` ("<account>/<name>").
std::string seal_manifest(const image_manifest& manifest, const std::array<uint8_t, 32>& key,
                          std::string_view aad);

/// Opens and parses a sealed manifest. Returns an error text, empty on success.
std::string open_manifest(std::string_view sealed, const std::array<uint8_t, 32>& key,
                          std::string_view aad, image_manifest& out);

} // namespace nimbus::storage
