#include "nimbus/storage/chunk.hpp"

#include "sha256_x2.hpp"

#include <doctest/doctest.h>

#include <openssl/rand.h>

using namespace nimbus::storage;

namespace {

convergence_secret secret_of(uint8_t b) {
  convergence_secret s;
  s.fill(b);
  return s;
}

} // namespace

TEST_CASE("chunk: sealing is convergent within a secret and differs across secrets") {
  std::string plain(chunk_size, 'a');
  plain[17] = 'b';
  auto one = seal_chunk(secret_of(1), plain);
  auto two = seal_chunk(secret_of(1), plain);
  auto other = seal_chunk(secret_of(2), plain);
  CHECK(one.ref == two.ref);
  CHECK(one.bytes == two.bytes);
  CHECK(one.ref.id != other.ref.id);
  CHECK(one.ref.key != other.ref.key);
  CHECK(one.bytes.size() == plain.size() + chunk_overhead);
  // The sealed bytes do not contain the plaintext.
  CHECK(one.bytes.find(std::string(64, 'a')) == std::string::npos);
  std::string back;
  CHECK(open_chunk(one.ref, one.bytes, back).empty());
  CHECK(back == plain);
}

TEST_CASE("chunk: every flipped bit and a wrong key are detected (CS-2)") {
  std::string plain = "short last chunk";
  auto sealed = seal_chunk(secret_of(3), plain);
  std::string out;
  for (size_t i = 0; i < sealed.bytes.size(); ++i) {
    auto bad = sealed.bytes;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    auto error = open_chunk(sealed.ref, bad, out);
    CHECK_MESSAGE(!error.empty(), "byte " << i);
  }
  // The right bytes under a wrong key fail the GCM tag.
  auto forged = sealed.ref;
  forged.key[0] ^= 1;
  CHECK(!open_chunk(forged, sealed.bytes, out).empty());
  auto truncated = sealed.bytes.substr(0, sealed.bytes.size() - 1);
  CHECK(!open_chunk(sealed.ref, truncated, out).empty());
  // Errors never carry key bytes.
  auto error = open_chunk(forged, sealed.bytes, out);
  CHECK(error.find(chunk_id_hex(forged.key)) == std::string::npos);
}

TEST_CASE("chunk: a store can check an id without the key") {
  auto sealed = seal_chunk(secret_of(6), "some plaintext");
  CHECK(chunk_id_matches(sealed.ref.id, sealed.bytes));
  auto bad = sealed.bytes;
  bad.back() = static_cast<char>(bad.back() ^ 1);
  CHECK_FALSE(chunk_id_matches(sealed.ref.id, bad));
  // Another chunk's bytes under this chunk's ref fail the read.
  auto other = seal_chunk(secret_of(6), "sane plaintext");
  std::string out;
  CHECK_FALSE(open_chunk(sealed.ref, other.bytes, out).empty());
}

TEST_CASE("chunk: ids round-trip through hex") {
  auto sealed = seal_chunk(secret_of(4), "abc");
  chunk_id back{};
  CHECK(parse_chunk_id(chunk_id_hex(sealed.ref.id), back));
  CHECK(back == sealed.ref.id);
  CHECK_FALSE(parse_chunk_id("xyz", back));
  CHECK_FALSE(parse_chunk_id(std::string(64, 'G'), back));
  CHECK_FALSE(parse_chunk_id(std::string(64, 'A'), back));
}

TEST_CASE("chunk: the memory store counts reads and reports missing chunks") {
  memory_chunk_store store;
  auto sealed = seal_chunk(secret_of(5), "payload");
  CHECK(store.put(sealed.ref.id, sealed.bytes).empty());
  CHECK(store.contains(sealed.ref.id));
  std::string got;
  CHECK(store.get(sealed.ref.id, got).empty());
  CHECK(got == sealed.bytes);
  CHECK(store.reads() == 1);
  auto other = seal_chunk(secret_of(5), "other");
  auto error = store.get(other.ref.id, got);
  CHECK(error.find("not found") != std::string::npos);
}

namespace {

std::string random_plain(size_t n) {
  std::string out(n, '\0');
  if (n != 0)
    REQUIRE(RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) == 1);
  return out;
}

// Restores SHA-NI (where the CPU has it) even when a check fails.
struct portable_sha256 {
  explicit portable_sha256(bool on) {
    sha256_force_portable(on);
  }
  ~portable_sha256() {
    sha256_force_portable(false);
  }
};

} // namespace

TEST_CASE("chunk: the pipelined sealer gives exactly seal_chunk's refs and bytes") {
  std::vector<size_t> sizes = {0,   1,   55,  56,  63,  64,  65,  100, 4096, chunk_size - 1,
                               chunk_size, 1, chunk_size, 0, 64, chunk_size - 1, 33};
  for (int i = 0; i < 24; ++i) {
    uint32_t r = 0;
    REQUIRE(RAND_bytes(reinterpret_cast<unsigned char*>(&r), sizeof r) == 1);
    // Half of them small, half anywhere up to a chunk.
    sizes.push_back(i % 2 ? r % 300 : r % (chunk_size + 1));
  }
  std::vector<std::string> plains;
  for (auto n : sizes)
    plains.push_back(random_plain(n));
  // A repeated plaintext seals the same both times.
  plains.push_back(plains[9]);
  std::vector<std::string_view> views(plains.begin(), plains.end());
  auto secret = secret_of(7);
  std::vector<sealed_chunk> expected;
  for (auto& p : plains)
    expected.push_back(seal_chunk(secret, p));

  sha256_force_portable(false);
  std::vector<bool> modes = {false};
  if (sha256_uses_sha_ni())
    modes.push_back(true);
  else
    MESSAGE("no SHA-NI on this CPU: only the OpenSSL fallback is tested");
  for (bool portable : modes) {
    CAPTURE(portable);
    portable_sha256 mode(portable);
    std::vector<sealed_chunk> got;
    seal_chunks(secret, views, got);
    REQUIRE(got.size() == expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      CAPTURE(i);
      CAPTURE(plains[i].size());
      CHECK(got[i].ref == expected[i].ref);
      CHECK(got[i].bytes == expected[i].bytes);
    }
    CHECK(got.back().ref == got[9].ref);

    // One chunk at a time, with flushes in the middle and a plaintext
    // buffer overwritten as soon as seal() returns.
    chunk_sealer sealer(secret);
    CHECK(sealer.flush() == nullptr);
    std::vector<sealed_chunk> streamed;
    std::string buffer;
    for (size_t i = 0; i < plains.size(); ++i) {
      buffer = plains[i];
      if (auto* done = sealer.seal(buffer))
        streamed.push_back(*done);
      buffer.assign(buffer.size(), 'x');
      if (i == 3 || i == 4) {
        auto* done = sealer.flush();
        REQUIRE(done != nullptr);
        streamed.push_back(*done);
        CHECK(sealer.flush() == nullptr);
      }
    }
    if (auto* done = sealer.flush())
      streamed.push_back(*done);
    REQUIRE(streamed.size() == expected.size());
    for (size_t i = 0; i < streamed.size(); ++i) {
      CAPTURE(i);
      CHECK(streamed[i].ref == expected[i].ref);
      CHECK(streamed[i].bytes == expected[i].bytes);
    }
  }
  // Every sealed chunk opens back to its plaintext.
  std::string back;
  for (size_t i = 0; i < expected.size(); ++i) {
    CHECK(open_chunk(expected[i].ref, expected[i].bytes, back).empty());
    CHECK(back == plains[i]);
  }
}

TEST_CASE("chunk: the pipelined sealer refuses an oversized plaintext") {
  chunk_sealer sealer(secret_of(8));
  std::string big(chunk_size + 1, 'a');
  CHECK_THROWS_AS(sealer.seal(big), std::invalid_argument);
  std::vector<sealed_chunk> out;
  CHECK_THROWS_AS(seal_chunks(secret_of(8), {std::string_view{big}}, out), std::invalid_argument);
  // A refused plaintext leaves the sealer usable.
  auto* first = sealer.seal("abc");
  CHECK(first == nullptr);
  auto* done = sealer.flush();
  REQUIRE(done != nullptr);
  CHECK(done->ref == seal_chunk(secret_of(8), "abc").ref);
}
