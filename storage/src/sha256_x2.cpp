#include "sha256_x2.hpp"

// SHA256_Init/Update on a bare context are the only way OpenSSL 3 exposes
// its block function (the fallback below); they are deprecated, not gone.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#define NIMBUS_SHA_NI 1
#include <immintrin.h>
#endif

namespace nimbus::storage {

namespace {

constexpr std::array<uint32_t, 8> initial_hash = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

std::atomic<bool> force_portable{false};

// Compresses `blocks` 64-byte blocks into `h` with OpenSSL's block function
// (which picks its own SHA-NI, AVX2 or plain code). With whole blocks and an
// empty buffer, SHA256_Update hands them straight to it.
void compress_openssl(std::array<uint32_t, 8>& h, const uint8_t* data, size_t blocks) {
  if (blocks == 0)
    return;
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  std::copy(h.begin(), h.end(), ctx.h);
  SHA256_Update(&ctx, data, blocks * 64);
  std::copy(ctx.h, ctx.h + 8, h.begin());
  OPENSSL_cleanse(&ctx, sizeof ctx);
}

#ifdef NIMBUS_SHA_NI

// Only the functions below use SHA-NI and SSE4.1 instructions: the target
// attribute keeps the compiler from emitting them anywhere else in the file,
// which runs on any x86-64.
#define NIMBUS_SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))
#define NIMBUS_SHA_INLINE NIMBUS_SHA_TARGET __attribute__((always_inline)) inline

alignas(16) constexpr uint32_t round_constants[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

// sha256rnds2 keeps the eight working variables in two registers, lanes
// (low to high) F E B A and H G D C; the chaining value is A..H in order.
NIMBUS_SHA_INLINE void load_state(const uint32_t* h, __m128i& abef, __m128i& cdgh) {
  __m128i abcd = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h));
  __m128i efgh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 4));
  __m128i badc = _mm_shuffle_epi32(abcd, 0xB1);
  __m128i hgfe = _mm_shuffle_epi32(efgh, 0x1B);
  abef = _mm_alignr_epi8(badc, hgfe, 8);
  cdgh = _mm_blend_epi16(hgfe, badc, 0xF0);
}

NIMBUS_SHA_INLINE void store_state(uint32_t* h, __m128i abef, __m128i cdgh) {
  __m128i abef_rev = _mm_shuffle_epi32(abef, 0x1B); // A B E F
  __m128i ghcd = _mm_shuffle_epi32(cdgh, 0xB1);     // G H C D
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h), _mm_blend_epi16(abef_rev, ghcd, 0xF0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 4), _mm_alignr_epi8(ghcd, abef_rev, 8));
}

// Compresses `blocks` blocks of each of N independent streams, the rounds
// of the streams interleaved so that their latencies overlap.
template <int N>
NIMBUS_SHA_INLINE void compress_ni(uint32_t* const* h, const uint8_t* const* data, size_t blocks) {
  // Message words are big-endian: reverse the bytes of each 32-bit lane.
  const __m128i byte_swap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
  const auto* k = reinterpret_cast<const __m128i*>(round_constants);
  __m128i abef[N], cdgh[N];
  for (int s = 0; s < N; ++s)
    load_state(h[s], abef[s], cdgh[s]);
  for (size_t b = 0; b < blocks; ++b) {
    __m128i abef_in[N], cdgh_in[N];
    // w[s][i % 4] holds message words 4i..4i+3 of stream s.
    __m128i w[N][4];
    for (int s = 0; s < N; ++s) {
      abef_in[s] = abef[s];
      cdgh_in[s] = cdgh[s];
      auto* in = reinterpret_cast<const __m128i*>(data[s] + 64 * b);
      for (int i = 0; i < 4; ++i)
        w[s][i] = _mm_shuffle_epi8(_mm_loadu_si128(in + i), byte_swap);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      const __m128i ki = _mm_load_si128(k + i);
#pragma GCC unroll 2
      for (int s = 0; s < N; ++s) {
        if (i >= 4) {
          // W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four at a
          // time: msg1 adds s0 to W[t-16..], the alignr supplies W[t-7..],
          // msg2 adds s1 including the words computed in this same step.
          __m128i& w16 = w[s][i % 4];
          const __m128i w12 = w[s][(i + 1) % 4];
          const __m128i w8 = w[s][(i + 2) % 4];
          const __m128i w4 = w[s][(i + 3) % 4];
          __m128i sum = _mm_add_epi32(_mm_sha256msg1_epu32(w16, w12), _mm_alignr_epi8(w4, w8, 4));
          w16 = _mm_sha256msg2_epu32(sum, w4);
        }
        __m128i wk = _mm_add_epi32(w[s][i % 4], ki);
        // Two rounds each; the registers swap roles (old ABEF is new CDGH).
        cdgh[s] = _mm_sha256rnds2_epu32(cdgh[s], abef[s], wk);
        abef[s] = _mm_sha256rnds2_epu32(abef[s], cdgh[s], _mm_shuffle_epi32(wk, 0x0E));
      }
    }
    for (int s = 0; s < N; ++s) {
      abef[s] = _mm_add_epi32(abef[s], abef_in[s]);
      cdgh[s] = _mm_add_epi32(cdgh[s], cdgh_in[s]);
    }
  }
  for (int s = 0; s < N; ++s)
    store_state(h[s], abef[s], cdgh[s]);
}

NIMBUS_SHA_TARGET void compress_ni1(uint32_t* h, const uint8_t* data, size_t blocks) {
  compress_ni<1>(&h, &data, blocks);
}

NIMBUS_SHA_TARGET void compress_ni2(uint32_t* ha, const uint8_t* da, uint32_t* hb,
                                    const uint8_t* db, size_t blocks) {
  uint32_t* h[2] = {ha, hb};
  const uint8_t* d[2] = {da, db};
  compress_ni<2>(h, d, blocks);
}

bool cpu_has_sha_ni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1")
         && __builtin_cpu_supports("ssse3");
}

#endif // NIMBUS_SHA_NI

bool use_sha_ni() {
#ifdef NIMBUS_SHA_NI
  static const bool have_sha_ni = cpu_has_sha_ni();
  return have_sha_ni && !force_portable.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

void compress(std::array<uint32_t, 8>& h, const uint8_t* data, size_t blocks) {
  if (blocks == 0)
    return;
#ifdef NIMBUS_SHA_NI
  if (use_sha_ni()) {
    compress_ni1(h.data(), data, blocks);
    return;
  }
#endif
  compress_openssl(h, data, blocks);
}

void compress2(std::array<uint32_t, 8>& ha, const uint8_t* da, std::array<uint32_t, 8>& hb,
               const uint8_t* db, size_t blocks) {
  if (blocks == 0)
    return;
#ifdef NIMBUS_SHA_NI
  if (use_sha_ni()) {
    compress_ni2(ha.data(), da, hb.data(), db, blocks);
    return;
  }
#endif
  compress_openssl(ha, da, blocks);
  compress_openssl(hb, db, blocks);
}

// Tops up a partial block from the input; compresses it when it is full.
// Advances data/n past what it took.
void fill_block(sha256_state& s, const uint8_t*& data, size_t& n) {
  size_t used = s.length % 64;
  if (used == 0 || n == 0)
    return;
  size_t take = std::min(n, 64 - used);
  std::memcpy(s.block.data() + used, data, take);
  s.length += take;
  data += take;
  n -= take;
  if (used + take == 64)
    compress(s.h, s.block.data(), 1);
}

// Keeps the bytes after the last full block for later.
void keep_tail(sha256_state& s, const uint8_t* data, size_t n) {
  std::memcpy(s.block.data(), data, n);
  s.length += n;
}

void put_be32(uint8_t* out, uint32_t v) {
  out[0] = static_cast<uint8_t>(v >> 24);
  out[1] = static_cast<uint8_t>(v >> 16);
  out[2] = static_cast<uint8_t>(v >> 8);
  out[3] = static_cast<uint8_t>(v);
}

} // namespace

void sha256_init(sha256_state& s) {
  s.h = initial_hash;
  s.length = 0;
}

void sha256_update(sha256_state& s, const void* data, size_t n) {
  auto* p = static_cast<const uint8_t*>(data);
  fill_block(s, p, n);
  if (n == 0)
    return;
  size_t blocks = n / 64;
  compress(s.h, p, blocks);
  s.length += 64 * blocks;
  keep_tail(s, p + 64 * blocks, n % 64);
}

void sha256_update2(sha256_state& a, const void* data_a, size_t na, sha256_state& b,
                    const void* data_b, size_t nb) {
  auto* pa = static_cast<const uint8_t*>(data_a);
  auto* pb = static_cast<const uint8_t*>(data_b);
  fill_block(a, pa, na);
  fill_block(b, pb, nb);
  // A state with input left after fill_block has an empty partial block.
  size_t blocks_a = na / 64;
  size_t blocks_b = nb / 64;
  size_t common = std::min(blocks_a, blocks_b);
  compress2(a.h, pa, b.h, pb, common);
  compress(a.h, pa + 64 * common, blocks_a - common);
  compress(b.h, pb + 64 * common, blocks_b - common);
  a.length += 64 * blocks_a;
  b.length += 64 * blocks_b;
  keep_tail(a, pa + 64 * blocks_a, na % 64);
  keep_tail(b, pb + 64 * blocks_b, nb % 64);
}

void sha256_finish(sha256_state& s, uint8_t out[32]) {
  uint64_t bits = s.length * 8;
  size_t used = s.length % 64;
  s.block[used++] = 0x80;
  if (used > 56) {
    std::memset(s.block.data() + used, 0, 64 - used);
    compress(s.h, s.block.data(), 1);
    used = 0;
  }
  std::memset(s.block.data() + used, 0, 56 - used);
  for (int i = 0; i < 8; ++i)
    s.block[56 + i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  compress(s.h, s.block.data(), 1);
  for (int i = 0; i < 8; ++i)
    put_be32(out + 4 * i, s.h[i]);
  OPENSSL_cleanse(&s, sizeof s);
}

void hmac_sha256_init(hmac_sha256_state& s, const void* key, size_t key_len) {
  uint8_t block[64] = {};
  if (key_len > sizeof block) {
    sha256_state k;
    sha256_init(k);
    sha256_update(k, key, key_len);
    sha256_finish(k, block);
  } else if (key_len != 0) {
    std::memcpy(block, key, key_len);
  }
  uint8_t pad[64];
  for (size_t i = 0; i < sizeof pad; ++i)
    pad[i] = block[i] ^ 0x36;
  sha256_init(s.inner);
  sha256_update(s.inner, pad, sizeof pad);
  for (size_t i = 0; i < sizeof pad; ++i)
    pad[i] = block[i] ^ 0x5c;
  sha256_init(s.outer);
  sha256_update(s.outer, pad, sizeof pad);
  OPENSSL_cleanse(block, sizeof block);
  OPENSSL_cleanse(pad, sizeof pad);
}

void hmac_sha256_finish(hmac_sha256_state& s, uint8_t out[32]) {
  uint8_t inner[32];
  sha256_finish(s.inner, inner);
  sha256_update(s.outer, inner, sizeof inner);
  sha256_finish(s.outer, out);
  OPENSSL_cleanse(inner, sizeof inner);
}

bool sha256_uses_sha_ni() {
  return use_sha_ni();
}

void sha256_force_portable(bool on) {
  force_portable.store(on, std::memory_order_relaxed);
}

} // namespace nimbus::storage
