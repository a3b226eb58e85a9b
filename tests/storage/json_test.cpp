#include "nimbus/storage/function_record.hpp"
#include "nimbus/storage/json.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>

using namespace nimbus::storage;

TEST_CASE("json: writer nests and separates correctly") {
  json_writer w;
  w.begin_object();
  w.key("a").value(int64_t{1});
  w.key("b").begin_array().value("x").value(true).null().end_array();
  w.key("c").begin_object().end_object();
  w.key("d").value(1573686021.479);
  w.end_object();
  CHECK(w.str() == R"({"a":1,"b":["x",true,null],"c":{},"d":1573686021.479})");
}

TEST_CASE("json: strings are escaped and invalid utf-8 is replaced") {
  std::string out;
  append_json_string(out, "q\"b\\n\n\x01 \xc3\xa9");
  CHECK(out == "\"q\\\"b\\\\n\\n\\u0001 \xc3\xa9\"");
  out.clear();
  append_json_string(out, "\xff");
  CHECK(out == "\"\xEF\xBF\xBD\"");
}

TEST_CASE("json: function records round trip") {
  function_record r;
  r.account_id = "123456789012";
  r.name = "f";
  r.runtime = "python3.11";
  r.role = "arn:aws:iam::123456789012:role/r";
  r.handler = "app.handler";
  r.description = "d \"quoted\"";
  r.timeout = 30;
  r.memory_size = 256;
  r.environment = {{"A", "1"}, {"B", "two"}};
  r.has_environment = true;
  r.code_sha256 = "abc=";
  r.code_sha256_hex = std::string(64, 'a');
  r.code_size = 1234;
  r.last_modified = format_last_modified(1574364732123);
  r.revision_id = "rev";
  std::string error;
  auto back = function_record_from_json(to_json(r), error);
  REQUIRE_MESSAGE(back, error);
  CHECK(back->description == r.description);
  CHECK(back->environment == r.environment);
  CHECK(back->timeout == 30);
  CHECK(back->code_size == 1234);
  CHECK(back->last_modified == "2019-11-21T19:32:12.123+0000");
  CHECK(back->architectures == std::vector<std::string>{"x86_64"});
  CHECK_FALSE(function_record_from_json("{\"format_version\":1}", error));
  CHECK(error.find("account_id") != std::string::npos);
  CHECK_FALSE(function_record_from_json("{not json", error));
}

TEST_CASE("format_millis prints microseconds as milliseconds like %.Nf, rounding half up") {
  CHECK(format_millis(0, 3) == "0.000");
  CHECK(format_millis(1, 3) == "0.001");
  CHECK(format_millis(1234567, 3) == "1234.567");
  CHECK(format_millis(1234567, 2) == "1234.57");
  CHECK(format_millis(1234564, 2) == "1234.56");
  CHECK(format_millis(1234567, 1) == "1234.6");
  CHECK(format_millis(1234567, 0) == "1235");
  CHECK(format_millis(999, 2) == "1.00");
  CHECK(format_millis(994, 2) == "0.99");
  CHECK(format_millis(50, 2) == "0.05");
  CHECK(format_millis(4, 2) == "0.00");
  CHECK(format_millis(-1500, 2) == "-1.50");
  CHECK(format_millis(-4, 2) == "0.00");
  CHECK(format_millis(INT64_MAX, 3) == "9223372036854775.807");
  // Out-of-range precision is clamped.
  CHECK(format_millis(1234567, 7) == "1234.567");
  CHECK(format_millis(1234567, -1) == "1235");
  // The same text as printf for values printf represents exactly.
  for (int64_t us : {0, 7, 10, 123, 1000, 65432, 10'000'000}) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(us) / 1000.0);
    CHECK(format_millis(us, 3) == buf);
  }
}
