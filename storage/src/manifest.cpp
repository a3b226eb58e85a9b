#include "nimbus/storage/manifest.hpp"

#include "aead.hpp"

#include <openssl/crypto.h>

#include <cstring>

namespace nimbus::storage {

namespace {

constexpr std::string_view magic = "NMF1";
constexpr uint32_t format_version = 1;
constexpr size_t header_size = 4 + 4 + 8 + 4;
constexpr size_t entry_size = 32 + 32 + 4;

template <typename T>
void put_le(std::string& out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i)
    out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

template <typename T>
T get_le(std::string_view in, size_t at) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    value |= static_cast<T>(static_cast<uint8_t>(in[at + i])) << (8 * i);
  return value;
}

} // namespace

std::string encode_manifest(const image_manifest& manifest) {
  std::string out;
  out.reserve(header_size + manifest.chunks.size() * entry_size);
  out.append(magic);
  put_le<uint32_t>(out, format_version);
  put_le<uint64_t>(out, manifest.size);
  put_le<uint32_t>(out, static_cast<uint32_t>(manifest.chunks.size()));
  for (auto& c : manifest.chunks) {
    out.append(reinterpret_cast<const char*>(c.id.data()), c.id.size());
    out.append(reinterpret_cast<const char*>(c.key.data()), c.key.size());
    put_le<uint32_t>(out, c.size);
  }
  return out;
}

std::string decode_manifest(std::string_view in, image_manifest& out) {
  out = {};
  if (in.size() < header_size || in.substr(0, magic.size()) != magic)
    return "manifest: bad format";
  if (get_le<uint32_t>(in, 4) != format_version)
    return "manifest: unsupported version " + std::to_string(get_le<uint32_t>(in, 4));
  uint64_t size = get_le<uint64_t>(in, 8);
  uint64_t count = get_le<uint32_t>(in, 16);
  uint64_t expected = size / chunk_size + (size % chunk_size != 0 ? 1 : 0);
  if (count != expected)
    return "manifest: chunk count does not match the image size";
  if ((in.size() - header_size) / entry_size != count || (in.size() - header_size) % entry_size)
    return "manifest: length does not match the chunk count";
  image_manifest m;
  m.size = size;
  m.chunks.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    size_t at = header_size + i * entry_size;
    auto& c = m.chunks[i];
    std::memcpy(c.id.data(), in.data() + at, 32);
    std::memcpy(c.key.data(), in.data() + at + 32, 32);
    c.size = get_le<uint32_t>(in, at + 64);
    uint64_t want = i + 1 < count ? chunk_size : size - (count - 1) * chunk_size;
    if (c.size != want) {
      OPENSSL_cleanse(m.chunks.data(), m.chunks.size() * sizeof(chunk_ref));
      return "manifest: chunk " + std::to_string(i) + " has a wrong size";
    }
  }
  out = std::move(m);
  return {};
}

std::string seal_manifest(const image_manifest& manifest, const std::array<uint8_t, 32>& key,
                          std::string_view aad) {
  auto plain = encode_manifest(manifest);
  auto sealed = detail::aead_seal(key, aad, plain);
  OPENSSL_cleanse(plain.data(), plain.size());
  return sealed;
}

std::string open_manifest(std::string_view sealed, const std::array<uint8_t, 32>& key,
                          std::string_view aad, image_manifest& out) {
  out = {};
  std::string plain;
  if (!detail::aead_open(key, aad, sealed, plain))
    return "manifest: authentication failed (corrupt, or not this image's manifest)";
  auto error = decode_manifest(plain, out);
  OPENSSL_cleanse(plain.data(), plain.size());
  return error;
}

} // namespace nimbus::storage
