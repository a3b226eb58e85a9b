#include "aead.hpp"

#include "nimbus/storage/digest.hpp"

#include <openssl/evp.h>

#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

namespace nimbus::storage::detail {

namespace {

constexpr size_t nonce_size = 12;
constexpr size_t tag_size = 16;

struct ctx_deleter {
  void operator()(EVP_CIPHER_CTX* c) const {
    EVP_CIPHER_CTX_free(c);
  }
};
using ctx_ptr = std::unique_ptr<EVP_CIPHER_CTX, ctx_deleter>;

ctx_ptr new_ctx() {
  ctx_ptr ctx{EVP_CIPHER_CTX_new()};
  if (!ctx)
    throw std::bad_alloc();
  return ctx;
}

const unsigned char* bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

} // namespace

std::string aead_seal(const std::array<uint8_t, 32>& key, std::string_view aad,
                      std::string_view plaintext) {
  if (plaintext.size() > static_cast<size_t>(std::numeric_limits<int>::max())
      || aad.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw std::invalid_argument("aead_seal: record too large");
  std::string sealed = random_bytes(nonce_size);
  sealed.resize(nonce_size + plaintext.size() + tag_size);
  auto* nonce = reinterpret_cast<unsigned char*>(sealed.data());
  auto* out = nonce + nonce_size;
  auto ctx = new_ctx();
  int len = 0;
  if (EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nonce) != 1
      || EVP_EncryptUpdate(ctx.get(), nullptr, &len, bytes(aad), static_cast<int>(aad.size())) != 1
      || EVP_EncryptUpdate(ctx.get(), out, &len, bytes(plaintext),
                           static_cast<int>(plaintext.size()))
           != 1
      || EVP_EncryptFinal_ex(ctx.get(), out + len, &len) != 1
      || EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, tag_size, out + plaintext.size())
           != 1)
    throw std::runtime_error("aead_seal: AES-256-GCM failed");
  return sealed;
}

bool aead_open(const std::array<uint8_t, 32>& key, std::string_view aad, std::string_view sealed,
               std::string& plaintext) {
  plaintext.clear();
  if (sealed.size() < nonce_size + tag_size
      || sealed.size() > static_cast<size_t>(std::numeric_limits<int>::max())
      || aad.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    return false;
  size_t n = sealed.size() - nonce_size - tag_size;
  auto* nonce = bytes(sealed);
  auto* in = nonce + nonce_size;
  unsigned char tag[tag_size];
  std::memcpy(tag, in + n, tag_size);
  plaintext.resize(n);
  auto* out = reinterpret_cast<unsigned char*>(plaintext.data());
  auto ctx = new_ctx();
  int len = 0;
  bool ok = EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nonce) == 1
            && EVP_DecryptUpdate(ctx.get(), nullptr, &len, bytes(aad), static_cast<int>(aad.size()))
                 == 1
            && EVP_DecryptUpdate(ctx.get(), out, &len, in, static_cast<int>(n)) == 1
            && EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, tag_size, tag) == 1
            && EVP_DecryptFinal_ex(ctx.get(), out + len, &len) == 1;
  if (!ok) {
    plaintext.clear();
    return false;
  }
  return true;
}

} // namespace nimbus::storage::detail
