#include "nimbus/storage/digest.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <random>
#include <stdexcept>

namespace nimbus::storage {

digest256 sha256(std::string_view data) {
  digest256 out{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("EVP_Digest(sha256) failed");
  return out;
}

sha256_stream::sha256_stream() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
    throw std::runtime_error("EVP_DigestInit_ex(sha256) failed");
  }
}

sha256_stream::~sha256_stream() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

sha256_stream::sha256_stream(sha256_stream&& other) noexcept : ctx_(other.ctx_) {
  other.ctx_ = nullptr;
}

sha256_stream& sha256_stream::operator=(sha256_stream&& other) noexcept {
  if (this != &other) {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
    ctx_ = other.ctx_;
    other.ctx_ = nullptr;
  }
  return *this;
}

void sha256_stream::update(std::string_view data) {
  if (!ctx_ || EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size()) != 1)
    throw std::runtime_error("EVP_DigestUpdate(sha256) failed");
}

digest256 sha256_stream::finish() {
  digest256 out{};
  unsigned int len = 0;
  auto* ctx = static_cast<EVP_MD_CTX*>(ctx_);
  if (!ctx || EVP_DigestFinal_ex(ctx, out.data(), &len) != 1
      || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("EVP_DigestFinal_ex(sha256) failed");
  return out;
}

digest256 hmac_sha256(std::string_view key, std::string_view data) {
  digest256 out{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &len)
      == nullptr)
    throw std::runtime_error("HMAC(sha256) failed");
  return out;
}

std::string_view as_bytes(const digest256& d) {
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

std::string to_hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 0x0f]);
  }
  return out;
}

std::string to_hex(const digest256& d) {
  return to_hex(as_bytes(d));
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char alphabet[]
    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(alphabet[(v >> 6) & 63]);
    out.push_back(alphabet[v & 63]);
  }
  if (auto rest = bytes.size() - i; rest > 0) {
    uint32_t v = byte(i) << 16;
    if (rest == 2)
      v |= byte(i + 1) << 8;
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? alphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0)
    return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    bool last = i + 4 == text.size();
    int pad = 0;
    if (last) {
      if (text[i + 3] == '=') ++pad;
      if (text[i + 2] == '=') {
        if (pad != 1) return std::nullopt;
        ++pad;
      }
    }
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      if (k >= 4 - pad) {
        v <<= 6;
        continue;
      }
      int d = value(text[i + k]);
      if (d < 0)
        return std::nullopt;
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    out.push_back(static_cast<char>((v >> 16) & 0xff));
    if (pad < 2) out.push_back(static_cast<char>((v >> 8) & 0xff));
    if (pad < 1) out.push_back(static_cast<char>(v & 0xff));
  }
  return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  if (n > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return out;
}

namespace {

// 8-4-4-4-12 hex digits with the version 4 and variant bits set; written in
// place (a request id is made per invocation).
std::string uuid_text(std::array<unsigned char, 16> b) {
  static constexpr char digits[] = "0123456789abcdef";
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  std::string out(36, '-');
  size_t o = 0;
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      ++o; // the dash
    out[o++] = digits[b[i] >> 4];
    out[o++] = digits[b[i] & 0x0f];
  }
  return out;
}

std::mt19937_64& id_generator() {
  thread_local std::mt19937_64 gen{[] {
    auto seed = random_bytes(sizeof(uint64_t) * 4);
    std::seed_seq seq(seed.begin(), seed.end());
    return std::mt19937_64{seq};
  }()};
  return gen;
}

// Fills `out` from the thread's id generator (no allocation: ids are made
// several times per invocation).
void id_bytes(unsigned char* out, size_t n) {
  auto& gen = id_generator();
  for (size_t i = 0; i < n; i += 8) {
    auto v = gen();
    std::memcpy(out + i, &v, std::min<size_t>(8, n - i));
  }
}

} // namespace

std::string random_uuid() {
  std::array<unsigned char, 16> b{};
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return uuid_text(b);
}

std::string request_uuid() {
  std::array<unsigned char, 16> b{};
  id_bytes(b.data(), b.size());
  return uuid_text(b);
}

void append_request_hex(std::string& out, size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  while (n > 0) {
    std::array<unsigned char, 32> b{};
    auto take = std::min(n, b.size());
    id_bytes(b.data(), take);
    for (size_t i = 0; i < take; ++i) {
      out.push_back(digits[b[i] >> 4]);
      out.push_back(digits[b[i] & 0x0f]);
    }
    n -= take;
  }
}

std::string request_hex(size_t n) {
  std::string out;
  out.reserve(2 * n);
  append_request_hex(out, n);
  return out;
}

} // namespace nimbus::storage
