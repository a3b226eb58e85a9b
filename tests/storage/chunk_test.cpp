#include "nimbus/storage/chunk.hpp"

#include <doctest/doctest.h>

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
