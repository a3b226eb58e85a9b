#include "nimbus/transport/lambda_api.hpp"

#include <doctest/doctest.h>

using namespace nimbus::transport::lambda;

TEST_CASE("lambda api: routes the control-plane operations") {
  struct row {
    const char* method;
    const char* target;
    operation op;
    const char* name;
  };
  for (auto r : std::vector<row>{
         {"POST", "/2015-03-31/functions", operation::create_function, ""},
         {"GET", "/2015-03-31/functions/", operation::list_functions, ""},
         {"GET", "/2015-03-31/functions", operation::list_functions, ""},
         {"GET", "/2015-03-31/functions/?MaxItems=2", operation::list_functions, ""},
         {"GET", "/2015-03-31/functions/f1", operation::get_function, "f1"},
         {"DELETE", "/2015-03-31/functions/f1", operation::delete_function, "f1"},
         {"GET", "/2015-03-31/functions/f%3A%24LATEST/configuration",
          operation::get_function_configuration, "f:$LATEST"},
         {"PUT", "/2015-03-31/functions/f1/configuration",
          operation::update_function_configuration, "f1"},
         {"PUT", "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af1/code",
          operation::update_function_code, "arn:aws:lambda:us-east-1:123456789012:function:f1"},
         {"GET", "/2016-08-19/account-settings", operation::get_account_settings, ""},
         {"GET", "/2016-08-19/account-settings/", operation::get_account_settings, ""},
         {"GET", "/nimbus/code/123456789012/f1/abc", operation::download_code, "f1"},
         {"GET", "/health", operation::health, ""},
         {"GET", "/metrics", operation::metrics, ""},
       }) {
    auto m = match(r.method, r.target);
    REQUIRE_MESSAGE(m.matched, r.target);
    CHECK_MESSAGE(m.matched->op == r.op, r.target);
    CHECK(m.matched->function_name == r.name);
  }
  auto m = match("GET", "/2015-03-31/functions/f1?Qualifier=%24LATEST");
  REQUIRE(m.matched);
  CHECK(m.matched->param("Qualifier") == "$LATEST");
  CHECK_FALSE(m.matched->param("Other"));
}

TEST_CASE("lambda api: unknown paths and methods are errors") {
  auto m = match("GET", "/2015-03-31/nothing");
  CHECK_FALSE(m.matched);
  CHECK(m.error.status == 404);
  CHECK(m.error.type == "UnknownOperationException");
  m = match("PATCH", "/2015-03-31/functions/f1");
  CHECK_FALSE(m.matched);
  CHECK(m.error.status == 405);
  m = match("GET", "/2015-03-31/functions/f1?a=%zz");
  CHECK_FALSE(m.matched);
  CHECK(m.error.status == 400);
  CHECK_FALSE(match("GET", "/2015-03-31/functions/f1/code/extra").matched);
  CHECK(is_public(operation::health));
  CHECK_FALSE(is_public(operation::get_function));
}

TEST_CASE("lambda api: function names in every accepted form") {
  auto r = parse_function_name("my-function_1", 140);
  REQUIRE(r);
  CHECK(r->name == "my-function_1");
  CHECK(r->account_id.empty());
  CHECK_FALSE(r->qualifier);

  r = parse_function_name("f:$LATEST", 140);
  REQUIRE(r);
  CHECK(r->name == "f");
  CHECK(r->qualifier == "$LATEST");

  r = parse_function_name("123456789012:function:f:live", 140);
  REQUIRE(r);
  CHECK(r->account_id == "123456789012");
  CHECK(r->name == "f");
  CHECK(r->qualifier == "live");

  r = parse_function_name("arn:aws:lambda:us-east-1:123456789012:function:f", 140);
  REQUIRE(r);
  CHECK(r->region == "us-east-1");
  CHECK(r->account_id == "123456789012");
  CHECK(r->name == "f");

  r = parse_function_name("arn:aws:lambda:eu-west-1:123456789012:function:f:7", 140);
  REQUIRE(r);
  CHECK(r->qualifier == "7");

  for (auto bad : {"", "a b", "f:", "f:a:b", "12345:function:f", "arn:aws:s3:us-east-1:123456789012:function:f",
                   "arn:aws:lambda:us-east-1:123456789012:layer:f", "../etc", "f/g",
                   "arn:aws:lambda:us-east-1:123456789012:function:f:1:2"})
    CHECK_MESSAGE(!parse_function_name(bad, 140), bad);
  CHECK_FALSE(parse_function_name(std::string(65, 'a'), 140));
  CHECK_FALSE(parse_function_name("f", 0));
}

TEST_CASE("lambda api: arns") {
  CHECK(function_arn("us-east-1", "123456789012", "f")
        == "arn:aws:lambda:us-east-1:123456789012:function:f");
  CHECK(function_arn("us-east-1", "123456789012", "f", "$LATEST")
        == "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST");
}

TEST_CASE("lambda api: routes the event invoke config operations") {
  struct row {
    const char* method;
    const char* target;
    operation op;
  };
  for (auto r : std::vector<row>{
         {"PUT", "/2019-09-25/functions/f1/event-invoke-config",
          operation::put_function_event_invoke_config},
         {"POST", "/2019-09-25/functions/f1/event-invoke-config",
          operation::update_function_event_invoke_config},
         {"GET", "/2019-09-25/functions/f1/event-invoke-config?Qualifier=%24LATEST",
          operation::get_function_event_invoke_config},
         {"DELETE", "/2019-09-25/functions/f1/event-invoke-config",
          operation::delete_function_event_invoke_config},
         {"GET", "/2019-09-25/functions/f1/event-invoke-config/list?MaxItems=1",
          operation::list_function_event_invoke_configs},
       }) {
    auto m = match(r.method, r.target);
    REQUIRE_MESSAGE(m.matched, r.target);
    CHECK_MESSAGE(m.matched->op == r.op, r.method, " ", r.target);
    CHECK(m.matched->function_name == "f1");
  }
  CHECK(operation_name(operation::put_function_event_invoke_config)
        == "PutFunctionEventInvokeConfig");
  CHECK(operation_name(operation::list_function_event_invoke_configs)
        == "ListFunctionEventInvokeConfigs");
  auto arn = match("GET", "/2019-09-25/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012"
                          "%3Afunction%3Af1%3A%24LATEST/event-invoke-config");
  REQUIRE(arn.matched);
  CHECK(arn.matched->function_name == "arn:aws:lambda:us-east-1:123456789012:function:f1:$LATEST");
  CHECK(match("PATCH", "/2019-09-25/functions/f1/event-invoke-config").error.status == 405);
  CHECK(match("PUT", "/2019-09-25/functions/f1/event-invoke-config/list").error.status == 405);
  CHECK(match("GET", "/2019-09-25/functions/f1/event-invoke-config/other").error.status == 404);
  // The API version is part of the path: the old one does not have it.
  CHECK(match("GET", "/2015-03-31/functions/f1/event-invoke-config").error.status == 404);
}

TEST_CASE("lambda api: PUT /nimbus/images/{repository}:{tag} routes to push_image") {
  struct row {
    const char* target;
    const char* repository;
    const char* tag;
  };
  for (auto r : std::vector<row>{
         {"/nimbus/images/app:v1", "app", "v1"},
         {"/nimbus/images/app%3Av1", "app", "v1"},                // SDK-style encoded ':'
         {"/nimbus/images/team/web-app:1.0_rc-2", "team/web-app", "1.0_rc-2"},
         {"/nimbus/images/a.b_c-d/e:_", "a.b_c-d/e", "_"},
         {"/nimbus/images/app:latest?x=1", "app", "latest"},
       }) {
    auto m = match("PUT", r.target);
    REQUIRE_MESSAGE(m.matched, r.target);
    CHECK(m.matched->op == operation::push_image);
    REQUIRE(m.matched->labels.size() == 2);
    CHECK(m.matched->labels[0] == r.repository);
    CHECK(m.matched->labels[1] == r.tag);
    CHECK(m.matched->function_name.empty());
  }
  CHECK(operation_name(operation::push_image) == "PushImage");
  CHECK_FALSE(is_public(operation::push_image));

  auto m = match("GET", "/nimbus/images/app:v1");
  CHECK_FALSE(m.matched);
  CHECK(m.error.status == 405);

  for (const char* bad : {"/nimbus/images/app", "/nimbus/images/App:v1", "/nimbus/images/app:",
                          "/nimbus/images/:v1", "/nimbus/images/app:-v1", "/nimbus/images/a..b:v1",
                          "/nimbus/images/a//b:v1", "/nimbus/images/app/:v1", "/nimbus/images/-app:v1",
                          "/nimbus/images/app:v1/x:y", "/nimbus/images/app:v%201"}) {
    auto e = match("PUT", bad);
    CHECK_MESSAGE(!e.matched, bad);
    CHECK_MESSAGE(e.error.status == 400, bad);
    CHECK(e.error.type == "InvalidParameterValueException");
  }
  // The length limits: repository 255, tag 128.
  CHECK(match("PUT", "/nimbus/images/" + std::string(255, 'a') + ":t").matched);
  CHECK(match("PUT", "/nimbus/images/" + std::string(256, 'a') + ":t").error.status == 400);
  CHECK(match("PUT", "/nimbus/images/a:" + std::string(128, 'T')).matched);
  CHECK(match("PUT", "/nimbus/images/a:" + std::string(129, 'T')).error.status == 400);
}

TEST_CASE("lambda api: repository names and tags") {
  for (const char* ok : {"a", "0", "a-b", "a.b", "a_b", "a/b", "a1/b2/c3", "x.y-z_w/v"})
    CHECK_MESSAGE(valid_repository_name(ok), ok);
  for (const char* bad : {"", "A", "a-", "-a", ".a", "a/", "/a", "a--b", "a._b", "a//b", "a:b",
                          "a b", "a@b"})
    CHECK_MESSAGE(!valid_repository_name(bad), bad);
  for (const char* ok : {"v1", "_", "V1.2-rc_3", "latest"})
    CHECK_MESSAGE(valid_image_tag(ok), ok);
  for (const char* bad : {"", ".v", "-v", "v:1", "v/1", "v@1"})
    CHECK_MESSAGE(!valid_image_tag(bad), bad);
}
