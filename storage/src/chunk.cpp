#include "nimbus/storage/chunk.hpp"

#include <cstring>
#include <stdexcept>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

namespace nimbus::storage {

namespace {

constexpr std::string_view magic = "NCK1";
constexpr size_t tag_size = 16;

// One cipher context per thread: creating one costs more than sealing a
// small chunk's metadata, and contexts are not thread-safe.
EVP_CIPHER_CTX* thread_cipher() {
  struct holder {
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    ~holder() {
      EVP_CIPHER_CTX_free(ctx);
    }
  };
  thread_local holder h;
  if (h.ctx == nullptr)
    throw std::bad_alloc();
  return h.ctx;
}

const unsigned char zero_nonce[12] = {};

std::string short_id(const chunk_id& id) {
  return chunk_id_hex(id).substr(0, 16);
}

} // namespace

std::string chunk_id_hex(const chunk_id& id) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < id.size(); ++i) {
    out[2 * i] = digits[id[i] >> 4];
    out[2 * i + 1] = digits[id[i] & 0xf];
  }
  return out;
}

bool parse_chunk_id(std::string_view hex, chunk_id& out) {
  if (hex.size() != 64)
    return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]);
    int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

size_t chunk_id_hash::operator()(const chunk_id& id) const noexcept {
  size_t h;
  std::memcpy(&h, id.data(), sizeof(h));
  return h;
}

chunk_ref seal_chunk_into(const convergence_secret& secret, std::string_view plaintext,
                          std::string& sealed) {
  if (plaintext.size() > chunk_size)
    throw std::invalid_argument("seal_chunk: plaintext larger than a chunk");
  chunk_ref ref;
  ref.size = static_cast<uint32_t>(plaintext.size());
  unsigned int key_len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
       ref.key.data(), &key_len);
  sealed.resize(magic.size() + plaintext.size() + tag_size);
  std::memcpy(sealed.data(), magic.data(), magic.size());
  auto* out = reinterpret_cast<unsigned char*>(sealed.data() + magic.size());
  auto* ctx = thread_cipher();
  int len = 0;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, ref.key.data(), zero_nonce) != 1
      || EVP_EncryptUpdate(ctx, out, &len, reinterpret_cast<const unsigned char*>(plaintext.data()),
                           static_cast<int>(plaintext.size()))
           != 1
      || EVP_EncryptFinal_ex(ctx, out + len, &len) != 1
      || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, tag_size, out + plaintext.size()) != 1)
    throw std::runtime_error("seal_chunk: AES-256-GCM failed");
  SHA256(reinterpret_cast<const unsigned char*>(sealed.data()), sealed.size(), ref.id.data());
  return ref;
}

sealed_chunk seal_chunk(const convergence_secret& secret, std::string_view plaintext) {
  sealed_chunk result;
  result.ref = seal_chunk_into(secret, plaintext, result.bytes);
  return result;
}

std::string open_chunk(const chunk_ref& ref, std::string_view sealed, std::string& plaintext) {
  if (sealed.size() != ref.size + chunk_overhead || ref.size > chunk_size)
    return "chunk " + short_id(ref.id) + ": wrong length";
  if (sealed.substr(0, magic.size()) != magic)
    return "chunk " + short_id(ref.id) + ": bad format";
  plaintext.resize(ref.size);
  auto* ctx = thread_cipher();
  auto* in = reinterpret_cast<const unsigned char*>(sealed.data() + magic.size());
  auto* out = reinterpret_cast<unsigned char*>(plaintext.data());
  int len = 0;
  unsigned char tag[tag_size];
  std::memcpy(tag, in + ref.size, tag_size);
  bool ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, ref.key.data(), zero_nonce) == 1
            && EVP_DecryptUpdate(ctx, out, &len, in, static_cast<int>(ref.size)) == 1
            && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, tag_size, tag) == 1
            && EVP_DecryptFinal_ex(ctx, out + len, &len) == 1;
  if (!ok) {
    plaintext.clear();
    return "chunk " + short_id(ref.id) + ": authentication failed";
  }
  return {};
}

bool chunk_id_matches(const chunk_id& id, std::string_view sealed) {
  chunk_id actual;
  SHA256(reinterpret_cast<const unsigned char*>(sealed.data()), sealed.size(), actual.data());
  return actual == id;
}

std::string memory_chunk_store::put(const chunk_id& id, std::string_view sealed) {
  std::lock_guard lock(mutex_);
  chunks_.try_emplace(id, sealed);
  return {};
}

std::string memory_chunk_store::sync() {
  return {};
}

std::string memory_chunk_store::get(const chunk_id& id, std::string& sealed) {
  std::lock_guard lock(mutex_);
  auto i = chunks_.find(id);
  if (i == chunks_.end())
    return "chunk " + short_id(id) + ": not found";
  ++reads_;
  sealed = i->second;
  return {};
}

bool memory_chunk_store::contains(const chunk_id& id) {
  std::lock_guard lock(mutex_);
  return chunks_.count(id) != 0;
}

std::string memory_chunk_store::remove(const chunk_id& id) {
  std::lock_guard lock(mutex_);
  chunks_.erase(id);
  return {};
}

std::string memory_chunk_store::list(std::vector<chunk_id>& ids) {
  std::lock_guard lock(mutex_);
  ids.clear();
  for (auto& [id, bytes] : chunks_)
    ids.push_back(id);
  return {};
}

bool memory_chunk_store::local() const {
  return true;
}

uint64_t memory_chunk_store::reads() const {
  std::lock_guard lock(mutex_);
  return reads_;
}

void memory_chunk_store::corrupt(const chunk_id& id, std::string bytes) {
  std::lock_guard lock(mutex_);
  chunks_[id] = std::move(bytes);
}

} // namespace nimbus::storage
