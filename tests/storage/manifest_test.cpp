#include "nimbus/storage/manifest.hpp"

#include <doctest/doctest.h>

using namespace nimbus::storage;

namespace {

std::array<uint8_t, 32> key_of(uint8_t b) {
  std::array<uint8_t, 32> k;
  k.fill(b);
  return k;
}

image_manifest sample(uint64_t size) {
  image_manifest m;
  m.size = size;
  uint64_t left = size;
  uint8_t n = 1;
  while (left > 0) {
    chunk_ref ref;
    ref.id.fill(n);
    ref.key.fill(static_cast<uint8_t>(n + 100));
    ref.size = static_cast<uint32_t>(std::min<uint64_t>(left, chunk_size));
    left -= ref.size;
    m.chunks.push_back(ref);
    ++n;
  }
  return m;
}

bool same(const image_manifest& a, const image_manifest& b) {
  return a.size == b.size && a.chunks == b.chunks;
}

void set_u32(std::string& s, size_t at, uint32_t v) {
  for (size_t i = 0; i < 4; ++i)
    s[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

} // namespace

TEST_CASE("manifest: sealed manifests round-trip") {
  auto key = key_of(7);
  for (uint64_t size : {uint64_t{0}, uint64_t{1}, uint64_t{chunk_size}, uint64_t{chunk_size + 1},
                        uint64_t{3 * chunk_size + 12345}}) {
    auto m = sample(size);
    auto sealed = seal_manifest(m, key, "123456789012/app");
    image_manifest back;
    REQUIRE(open_manifest(sealed, key, "123456789012/app", back).empty());
    CHECK(same(back, m));
    // Random nonces: sealing twice differs.
    CHECK(seal_manifest(m, key, "123456789012/app") != sealed);
    // No chunk key in clear.
    if (!m.chunks.empty())
      CHECK(sealed.find(std::string(32, static_cast<char>(m.chunks[0].key[0])))
            == std::string::npos);
  }
}

TEST_CASE("manifest: every flipped bit, truncation and trailing byte is rejected") {
  auto key = key_of(7);
  auto m = sample(2 * chunk_size + 99);
  auto sealed = seal_manifest(m, key, "123456789012/app");
  image_manifest out;
  for (size_t i = 0; i < sealed.size() * 8; ++i) {
    auto bad = sealed;
    bad[i / 8] = static_cast<char>(bad[i / 8] ^ (1 << (i % 8)));
    CHECK_MESSAGE(!open_manifest(bad, key, "123456789012/app", out).empty(), "bit " << i);
  }
  for (size_t n = 0; n < sealed.size(); ++n)
    CHECK_MESSAGE(!open_manifest(sealed.substr(0, n), key, "123456789012/app", out).empty(),
                  "length " << n);
  CHECK(!open_manifest(sealed + '\0', key, "123456789012/app", out).empty());
  CHECK(out.chunks.empty());
}

TEST_CASE("manifest: a manifest moved to another name or account does not open (AAD)") {
  auto key_a = key_of(1);
  auto key_b = key_of(2);
  auto sealed = seal_manifest(sample(chunk_size + 5), key_a, "111111111111/app");
  image_manifest out;
  CHECK(open_manifest(sealed, key_a, "111111111111/app", out).empty());
  CHECK(!open_manifest(sealed, key_a, "111111111111/other", out).empty());
  CHECK(!open_manifest(sealed, key_a, "111111111111/app2", out).empty());
  // The other account's name under the same key, and under its own key.
  CHECK(!open_manifest(sealed, key_a, "222222222222/app", out).empty());
  CHECK(!open_manifest(sealed, key_b, "222222222222/app", out).empty());
  CHECK(!open_manifest(sealed, key_b, "111111111111/app", out).empty());
  auto error = open_manifest(sealed, key_b, "111111111111/app", out);
  CHECK(error.find("authentication failed") != std::string::npos);
}

TEST_CASE("manifest: the plain encoding is parsed strictly") {
  auto m = sample(2 * chunk_size + 99);
  auto plain = encode_manifest(m);
  CHECK(plain.size() == 20 + 3 * 68);
  image_manifest out;
  REQUIRE(decode_manifest(plain, out).empty());
  CHECK(same(out, m));

  CHECK(!decode_manifest(plain + 'x', out).empty());
  CHECK(!decode_manifest(plain.substr(0, plain.size() - 1), out).empty());
  CHECK(!decode_manifest(plain.substr(0, plain.size() - 68), out).empty());
  CHECK(!decode_manifest("", out).empty());
  auto bad = plain;
  bad[0] = 'X';
  CHECK(!decode_manifest(bad, out).empty());
  bad = plain;
  set_u32(bad, 4, 2); // version
  CHECK(decode_manifest(bad, out).find("version") != std::string::npos);
  bad = plain;
  set_u32(bad, 16, 2); // count does not match the size
  CHECK(!decode_manifest(bad, out).empty());
  bad = plain;
  set_u32(bad, 16, 4);
  CHECK(!decode_manifest(bad + plain.substr(20, 68), out).empty());
  // A size that needs one chunk less or more than listed.
  for (uint64_t size : {uint64_t{2 * chunk_size}, uint64_t{3 * chunk_size + 1}}) {
    bad = plain;
    for (size_t i = 0; i < 8; ++i)
      bad[8 + i] = static_cast<char>((size >> (8 * i)) & 0xff);
    CHECK(!decode_manifest(bad, out).empty());
  }
  // A middle chunk shorter than chunk_size, a last chunk of the wrong size.
  bad = plain;
  set_u32(bad, 20 + 68 + 64, chunk_size - 1);
  CHECK(decode_manifest(bad, out).find("wrong size") != std::string::npos);
  bad = plain;
  set_u32(bad, 20 + 2 * 68 + 64, 98);
  CHECK(!decode_manifest(bad, out).empty());
  bad = plain;
  set_u32(bad, 20 + 2 * 68 + 64, 0);
  CHECK(!decode_manifest(bad, out).empty());
  // An empty image has no chunks, and nothing else.
  auto empty = encode_manifest(image_manifest{});
  REQUIRE(decode_manifest(empty, out).empty());
  CHECK(out.size == 0);
  CHECK(!decode_manifest(empty + plain.substr(20, 68), out).empty());
  CHECK(out.chunks.empty());
}
