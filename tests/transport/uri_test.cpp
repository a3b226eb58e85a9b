#include "nimbus/transport/uri.hpp"

#include <doctest/doctest.h>

using namespace nimbus::transport;

TEST_CASE("uri: encoding keeps only unreserved characters") {
  CHECK(uri_encode("a-b_c.d~e") == "a-b_c.d~e");
  CHECK(uri_encode("f:live $") == "f%3Alive%20%24");
  CHECK(uri_encode("a/b") == "a%2Fb");
  CHECK(uri_encode("a/b", true) == "a/b");
  CHECK(uri_encode("\xe1\x88\xb4") == "%E1%88%B4");
}

TEST_CASE("uri: decoding rejects malformed escapes") {
  CHECK(uri_decode("f%3Alive%24LATEST") == "f:live$LATEST");
  CHECK(uri_decode("a+b") == "a+b");
  CHECK_FALSE(uri_decode("%"));
  CHECK_FALSE(uri_decode("%4"));
  CHECK_FALSE(uri_decode("%zz"));
}

TEST_CASE("uri: query strings split and decode") {
  auto q = parse_query("Marker=abc%3D&MaxItems=5&flag&&x=");
  REQUIRE(q);
  REQUIRE(q->size() == 4);
  CHECK((*q)[0] == std::pair<std::string, std::string>{"Marker", "abc="});
  CHECK((*q)[1].second == "5");
  CHECK((*q)[2] == std::pair<std::string, std::string>{"flag", ""});
  CHECK((*q)[3] == std::pair<std::string, std::string>{"x", ""});
  CHECK_FALSE(parse_query("a=%g1"));
}
