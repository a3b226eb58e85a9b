#include "sha256_x2.hpp"

#include <doctest/doctest.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <array>
#include <string>
#include <vector>

using namespace nimbus::storage;

namespace {

using digest = std::array<uint8_t, 32>;

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  if (n != 0)
    REQUIRE(RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) == 1);
  return out;
}

digest openssl_sha256(std::string_view data) {
  digest d;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d.data());
  return d;
}

digest openssl_hmac(std::string_view key, std::string_view data) {
  digest d;
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), d.data(), &len);
  return d;
}

digest one_shot(std::string_view data) {
  sha256_state s;
  sha256_init(s);
  sha256_update(s, data.data(), data.size());
  digest d;
  sha256_finish(s, d.data());
  return d;
}

// Sets the implementation for the scope; restores SHA-NI (when the CPU has
// it) even when a check fails.
struct implementation {
  explicit implementation(bool portable) {
    sha256_force_portable(portable);
  }
  ~implementation() {
    sha256_force_portable(false);
  }
};

// Both implementations where the CPU offers both, else only the portable one.
std::vector<bool> implementations() {
  sha256_force_portable(false);
  if (sha256_uses_sha_ni())
    return {false, true};
  MESSAGE("no SHA-NI on this CPU: only the OpenSSL fallback is tested");
  return {true};
}

// Every length 0..300 (every padding case, partial and full blocks) plus
// large ones, one shot, split at every point for short inputs, and in pairs
// of unequal lengths through update2.
void check_against_openssl(bool portable) {
  implementation impl(portable);
  CHECK(sha256_uses_sha_ni() == !portable);
  auto data = random_bytes(1 << 20);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 300; ++n)
    lengths.push_back(n);
  for (size_t n : {4095u, 4096u, 4097u, 65536u + 13, 524288u + 20, 1u << 20})
    lengths.push_back(n);
  for (size_t n : lengths) {
    auto input = std::string_view{data}.substr(0, n);
    CHECK_MESSAGE(one_shot(input) == openssl_sha256(input), "length " << n);
  }
  // Fed in two parts, split anywhere.
  for (size_t n = 0; n <= 200; n += 7)
    for (size_t cut = 0; cut <= n; ++cut) {
      auto input = std::string_view{data}.substr(0, n);
      sha256_state s;
      sha256_init(s);
      sha256_update(s, input.data(), cut);
      sha256_update(s, input.data() + cut, n - cut);
      digest d;
      sha256_finish(s, d.data());
      CHECK_MESSAGE(d == openssl_sha256(input), "length " << n << " cut " << cut);
    }
  // Two streams at once, of every pair of lengths in a grid and a few
  // large ones, including a first part that leaves a partial block.
  std::vector<size_t> pair_lengths = {0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 200, 300, 4096, 70001};
  for (size_t na : pair_lengths)
    for (size_t nb : pair_lengths)
      for (size_t head : {0u, 1u, 63u}) {
        auto a_in = std::string_view{data}.substr(5, na);
        auto b_in = std::string_view{data}.substr(100000, nb);
        size_t ha = std::min(head, na), hb = std::min(head * 2 % 64, nb);
        sha256_state a, b;
        sha256_init(a);
        sha256_init(b);
        sha256_update(a, a_in.data(), ha);
        sha256_update(b, b_in.data(), hb);
        sha256_update2(a, a_in.data() + ha, na - ha, b, b_in.data() + hb, nb - hb);
        digest da, db;
        sha256_finish(a, da.data());
        sha256_finish(b, db.data());
        CHECK_MESSAGE(da == openssl_sha256(a_in), "a " << na << " b " << nb << " head " << head);
        CHECK_MESSAGE(db == openssl_sha256(b_in), "a " << na << " b " << nb << " head " << head);
      }
  // Random pairs of lengths up to two chunks.
  for (int round = 0; round < 40; ++round) {
    uint32_t r[2];
    REQUIRE(RAND_bytes(reinterpret_cast<unsigned char*>(r), sizeof r) == 1);
    auto a_in = std::string_view{data}.substr(0, r[0] % data.size());
    auto b_in = std::string_view{data}.substr(r[1] % 1000, r[1] % (data.size() - 1000));
    sha256_state a, b;
    sha256_init(a);
    sha256_init(b);
    sha256_update2(a, a_in.data(), a_in.size(), b, b_in.data(), b_in.size());
    digest da, db;
    sha256_finish(a, da.data());
    sha256_finish(b, db.data());
    CHECK_MESSAGE(da == openssl_sha256(a_in), "a " << a_in.size());
    CHECK_MESSAGE(db == openssl_sha256(b_in), "b " << b_in.size());
  }
}

void check_hmac_against_openssl(bool portable) {
  implementation impl(portable);
  auto data = random_bytes(600000);
  // Key lengths around the block size (longer keys are hashed first).
  for (size_t key_len : {0u, 1u, 32u, 63u, 64u, 65u, 200u}) {
    auto key = random_bytes(key_len);
    for (size_t n : {0u, 1u, 55u, 56u, 63u, 64u, 65u, 119u, 120u, 300u, 524288u, 600000u}) {
      auto input = std::string_view{data}.substr(0, n);
      hmac_sha256_state s;
      hmac_sha256_init(s, key.data(), key.size());
      sha256_update(s.inner, input.data(), input.size());
      digest d;
      hmac_sha256_finish(s, d.data());
      CHECK_MESSAGE(d == openssl_hmac(key, input), "key " << key_len << " length " << n);
    }
  }
  // An HMAC and a plain hash in lockstep, as chunk_sealer runs them.
  auto key = random_bytes(32);
  for (size_t n : {0u, 64u, 1000u, 524288u}) {
    auto mac_in = std::string_view{data}.substr(0, n);
    auto hash_in = std::string_view{data}.substr(7, n + 20);
    hmac_sha256_state mac;
    hmac_sha256_init(mac, key.data(), key.size());
    sha256_state hash;
    sha256_init(hash);
    sha256_update2(mac.inner, mac_in.data(), mac_in.size(), hash, hash_in.data(), hash_in.size());
    digest dm, dh;
    hmac_sha256_finish(mac, dm.data());
    sha256_finish(hash, dh.data());
    CHECK(dm == openssl_hmac(key, mac_in));
    CHECK(dh == openssl_sha256(hash_in));
  }
}

} // namespace

TEST_CASE("sha256_x2: known answers") {
  for (bool portable : implementations()) {
    implementation impl(portable);
    auto hex = [](const digest& d) {
      static constexpr char digits[] = "0123456789abcdef";
      std::string out;
      for (auto b : d) {
        out += digits[b >> 4];
        out += digits[b & 0xf];
      }
      return out;
    };
    // FIPS 180-2 examples.
    CHECK(hex(one_shot("abc"))
          == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(hex(one_shot("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(hex(one_shot("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
          == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  }
}

TEST_CASE("sha256_x2: SHA-256 matches OpenSSL with SHA-NI and with the fallback") {
  for (bool portable : implementations()) {
    CAPTURE(portable);
    check_against_openssl(portable);
  }
}

TEST_CASE("sha256_x2: HMAC-SHA256 matches OpenSSL with SHA-NI and with the fallback") {
  for (bool portable : implementations()) {
    CAPTURE(portable);
    check_hmac_against_openssl(portable);
  }
}
