#include "nimbus/storage/digest.hpp"

#include <doctest/doctest.h>

#include <vector>

using namespace nimbus::storage;

TEST_CASE("digest: sha256 known answers") {
  CHECK(to_hex(sha256("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(to_hex(sha256("abc"))
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("digest: hmac-sha256 RFC 4231 case 2") {
  CHECK(to_hex(hmac_sha256("Jefe", "what do ya want for nothing?"))
        == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST_CASE("digest: base64 round trips and rejects malformed input") {
  CHECK(base64_encode("") == "");
  CHECK(base64_encode("f") == "Zg==");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK(base64_encode("foo") == "Zm9v");
  CHECK(base64_encode("foobar") == "Zm9vYmFy");
  for (std::string s : std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)})
    CHECK(base64_decode(base64_encode(s)) == s);
  CHECK_FALSE(base64_decode("Zg="));
  CHECK_FALSE(base64_decode("Z==="));
  CHECK_FALSE(base64_decode("Zg=a"));
  CHECK_FALSE(base64_decode("Zm9v YmFy"));
  CHECK_FALSE(base64_decode("Zm9*"));
  CHECK_FALSE(base64_decode("Zg==Zm9v"));
}

TEST_CASE("digest: constant-time comparison and uuids") {
  CHECK(constant_time_equal("abc", "abc"));
  CHECK_FALSE(constant_time_equal("abc", "abd"));
  CHECK_FALSE(constant_time_equal("abc", "abcd"));
  auto a = random_uuid();
  auto b = random_uuid();
  CHECK(a.size() == 36);
  CHECK(a[14] == '4');
  CHECK(a != b);
  // The 8-4-4-4-12 layout, lower-case hex, the RFC 4122 variant.
  for (const auto& id : {a, b, request_uuid()}) {
    REQUIRE(id.size() == 36);
    for (size_t i = 0; i < id.size(); ++i) {
      if (i == 8 || i == 13 || i == 18 || i == 23)
        CHECK(id[i] == '-');
      else
        CHECK(std::string_view{"0123456789abcdef"}.find(id[i]) != std::string_view::npos);
    }
    CHECK(id[14] == '4');
    CHECK(std::string_view{"89ab"}.find(id[19]) != std::string_view::npos);
  }
}

TEST_CASE("digest: sha256_stream equals the one-shot hash however the data is cut") {
  std::string data;
  for (int i = 0; i < 100000; ++i)
    data.push_back(static_cast<char>(i * 7 + i / 251));
  const auto whole = nimbus::storage::sha256(data);
  for (size_t piece : {1ul, 63ul, 64ul, 4096ul, 99999ul}) {
    nimbus::storage::sha256_stream s;
    for (size_t off = 0; off < data.size(); off += piece)
      s.update(std::string_view{data}.substr(off, piece));
    CHECK(s.finish() == whole);
  }
  // finish() starts over: the next digest is of the empty input.
  nimbus::storage::sha256_stream s;
  s.update("abc");
  s.finish();
  CHECK(nimbus::storage::to_hex(s.finish())
        == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  auto moved = std::move(s);
  moved.update("abc");
  CHECK(nimbus::storage::to_hex(moved.finish())
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("digest: request_hex and append_request_hex give fresh lower-case hex of the asked length") {
  for (size_t n : {size_t{1}, size_t{8}, size_t{12}, size_t{40}, size_t{100}}) {
    auto a = request_hex(n);
    CHECK(a.size() == 2 * n);
    std::string b = "prefix-";
    append_request_hex(b, n);
    REQUIRE(b.size() == 7 + 2 * n);
    CHECK(b.substr(0, 7) == "prefix-");
    for (char c : a + b.substr(7))
      CHECK(std::string_view{"0123456789abcdef"}.find(c) != std::string_view::npos);
    if (n >= 8)
      CHECK(a != b.substr(7));
  }
}
