// The stored form of function records: the asynchronous invocation fields
// (event_invoke, dead_letter_target) round trip, and records written before
// they existed still load.

#include "nimbus/storage/function_record.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace nimbus::storage;

namespace {

function_record sample() {
  function_record r;
  r.account_id = "123456789012";
  r.name = "f";
  r.runtime = "python3.11";
  r.role = "arn:aws:iam::123456789012:role/r";
  r.handler = "app.handler";
  r.code_sha256 = "abc=";
  r.code_sha256_hex = std::string(64, 'a');
  r.code_size = 10;
  r.last_modified = format_last_modified(1574364732123);
  r.revision_id = "rev";
  return r;
}

// A record exactly as the first releases wrote it: no reserved_concurrency,
// event_invoke or dead_letter_target.
constexpr const char* old_record = R"({"format_version":1,"account_id":"123456789012","name":"old",)"
                                   R"("runtime":"python3.11","role":"arn:aws:iam::123456789012:role/r",)"
                                   R"("handler":"app.handler","description":"","timeout":3,)"
                                   R"("memory_size":128,"ephemeral_storage":512,"has_environment":false,)"
                                   R"("environment":{},"architectures":["x86_64"],"package_type":"Zip",)"
                                   R"("code_sha256":"abc=","code_sha256_hex":"aa","code_size":10,)"
                                   R"("last_modified":"2019-11-21T19:32:12.123+0000","revision_id":"rev",)"
                                   R"("version":"$LATEST","state":"Active","last_update_status":"Successful"})";

} // namespace

TEST_CASE("function record: event invoke config and dead-letter target round trip") {
  auto r = sample();
  event_invoke_config e;
  e.maximum_retry_attempts = 0;
  e.maximum_event_age_seconds = -1;
  e.on_success = "arn:aws:sqs:us-east-1:123456789012:done";
  e.on_failure = "arn:aws:lambda:us-east-1:123456789012:function:on-failure:$LATEST";
  e.last_modified_ms = 1573686021479;
  r.event_invoke = e;
  r.dead_letter_target = "arn:aws:sqs:us-east-1:123456789012:dlq";
  std::string error;
  auto back = function_record_from_json(to_json(r), error);
  REQUIRE_MESSAGE(back, error);
  REQUIRE(back->event_invoke);
  CHECK(back->event_invoke->maximum_retry_attempts == 0);
  CHECK(back->event_invoke->maximum_event_age_seconds == -1);
  CHECK(back->event_invoke->on_success == e.on_success);
  CHECK(back->event_invoke->on_failure == e.on_failure);
  CHECK(back->event_invoke->last_modified_ms == 1573686021479);
  CHECK(back->dead_letter_target == r.dead_letter_target);
}

TEST_CASE("function record: without the async fields nothing is invented") {
  auto r = sample();
  auto json = to_json(r);
  CHECK(json.find("event_invoke") == std::string::npos);
  std::string error;
  auto back = function_record_from_json(json, error);
  REQUIRE_MESSAGE(back, error);
  CHECK_FALSE(back->event_invoke);
  CHECK(back->dead_letter_target.empty());
}

TEST_CASE("function record: records written before the async fields still load") {
  std::string error;
  auto r = function_record_from_json(old_record, error);
  REQUIRE_MESSAGE(r, error);
  CHECK(r->name == "old");
  CHECK(r->reserved_concurrency == -1);
  CHECK_FALSE(r->event_invoke);
  CHECK(r->dead_letter_target.empty());
  // Written back, it carries the new fields and loads again.
  auto again = function_record_from_json(to_json(*r), error);
  REQUIRE_MESSAGE(again, error);
  CHECK(again->revision_id == "rev");
}

TEST_CASE("function record: malformed async fields are corruption, not defaults") {
  std::string base = old_record;
  base.pop_back();
  std::string error;
  CHECK_FALSE(function_record_from_json(base + R"(,"event_invoke":{"maximum_retry_attempts":1}})",
                                        error));
  CHECK(error == "malformed field event_invoke");
  CHECK_FALSE(function_record_from_json(base + R"(,"dead_letter_target":7})", error));
  CHECK(error == "non-string field dead_letter_target");
  // null means none, as absence does.
  auto r = function_record_from_json(base + R"(,"event_invoke":null})", error);
  REQUIRE_MESSAGE(r, error);
  CHECK_FALSE(r->event_invoke);
}

TEST_CASE("function record: container-image fields round trip") {
  auto r = sample();
  r.package_type = "Image";
  r.runtime.clear();
  r.handler.clear();
  r.image_uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app/web:v1";
  r.resolved_image_uri = "app/web@sha256:" + std::string(64, 'b');
  r.image_config.entry_point = {"/bin/sh", "-c"};
  r.image_config.entry_point_set = true;
  r.image_config.command_set = true; // given as an empty list
  r.image_config.working_directory = "/srv";
  r.image_config.working_directory_set = true;
  r.code_image = "img-" + std::string(64, 'c');
  r.image_argv = {"/bin/sh", "-c", "exec server"};
  r.image_workdir = "/srv";
  r.image_env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8"};

  std::string error;
  auto back = function_record_from_json(to_json(r), error);
  REQUIRE_MESSAGE(back, error);
  CHECK(back->package_type == "Image");
  CHECK(back->image_uri == r.image_uri);
  CHECK(back->resolved_image_uri == r.resolved_image_uri);
  CHECK(back->image_config == r.image_config);
  CHECK(back->image_config.command.empty());
  CHECK(back->image_config.command_set);
  CHECK(back->code_image == r.code_image);
  CHECK(back->image_argv == r.image_argv);
  CHECK(back->image_workdir == "/srv");
  CHECK(back->image_env == r.image_env);
}

TEST_CASE("function record: records without image fields load as Zip with nothing set") {
  std::string error;
  auto r = function_record_from_json(old_record, error);
  REQUIRE_MESSAGE(r, error);
  CHECK(r->package_type == "Zip");
  CHECK(r->image_uri.empty());
  CHECK(r->resolved_image_uri.empty());
  CHECK_FALSE(r->image_config.any_set());
  CHECK(r->code_image.empty());
  CHECK(r->image_argv.empty());
  CHECK(r->image_env.empty());
  // Zip records are written without the image fields.
  CHECK(to_json(*r).find("image") == std::string::npos);
}

TEST_CASE("function record: malformed image fields are corruption") {
  std::string base = old_record;
  base.pop_back();
  std::string error;
  for (const char* extra : {R"(,"image_argv":"sh")", R"(,"image_argv":[1])",
                            R"(,"image_config":[])", R"(,"image_config":{"command":"x"})",
                            R"(,"image_config":{"command_set":"yes"})", R"(,"image_uri":5)"}) {
    CAPTURE(extra);
    CHECK_FALSE(function_record_from_json(base + extra + "}", error));
  }
  std::string bad_type = old_record;
  bad_type.replace(bad_type.find("\"Zip\""), 5, "\"Jar\"");
  CHECK_FALSE(function_record_from_json(bad_type, error));
}
