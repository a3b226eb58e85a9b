#include "nimbus/storage/function_record.hpp"
#include "nimbus/storage/json.hpp"

#include <doctest/doctest.h>

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
