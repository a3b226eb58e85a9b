#include "nimbus/storage/digest.hpp"
#include "nimbus/transport/lambda_codec.hpp"

#include <doctest/doctest.h>
#include <simdjson.h>

using namespace nimbus::transport::lambda;
using nimbus::storage::base64_encode;

namespace {

const codec_limits limits{};

std::string create_body(std::string extra = "") {
  return R"({"FunctionName":"f1","Runtime":"python3.11","Role":"arn:aws:iam::123456789012:role/lambda","Handler":"app.handler","Code":{"ZipFile":")"
         + base64_encode("PK-zip-bytes") + "\"}" + extra + "}";
}

} // namespace

TEST_CASE("lambda codec: a minimal CreateFunction gets AWS defaults") {
  auto p = parse_create_function(create_body(), limits);
  REQUIRE_MESSAGE(p.value, p.error.message);
  CHECK(p.value->name == "f1");
  CHECK(p.value->timeout == 3);
  CHECK(p.value->memory_size == 128);
  CHECK(p.value->ephemeral_storage == 512);
  CHECK(p.value->package_type == "Zip");
  CHECK(p.value->architectures == std::vector<std::string>{"x86_64"});
  CHECK(p.value->zip == "PK-zip-bytes");
  CHECK_FALSE(p.value->has_environment);
}

TEST_CASE("lambda codec: CreateFunction with every supported field") {
  auto p = parse_create_function(
    create_body(R"(,"Description":"d","Timeout":900,"MemorySize":10240,"EphemeralStorage":{"Size":1024},"Environment":{"Variables":{"A1":"x","B_2":"y"}},"Architectures":["x86_64"],"PackageType":"Zip","Publish":false,"Tags":{"t":"v"})"),
    limits);
  REQUIRE_MESSAGE(p.value, p.error.message);
  CHECK(p.value->timeout == 900);
  CHECK(p.value->memory_size == 10240);
  CHECK(p.value->ephemeral_storage == 1024);
  CHECK(p.value->has_environment);
  CHECK(p.value->environment.at("B_2") == "y");
}

TEST_CASE("lambda codec: CreateFunction accepts an ARN as FunctionName") {
  auto body = create_body();
  body.replace(body.find("\"f1\""), 4, "\"arn:aws:lambda:us-east-1:123456789012:function:f9\"");
  auto p = parse_create_function(body, limits);
  REQUIRE(p.value);
  CHECK(p.value->name == "f9");
}

TEST_CASE("lambda codec: bad input names the field") {
  struct row {
    std::string extra;
    std::string fragment;
  };
  for (const auto& r : std::vector<row>{
         {R"(,"Timeout":0)", "'timeout'"},
         {R"(,"Timeout":901)", "less than or equal to 900"},
         {R"(,"Timeout":"3")", "Timeout must be an integer"},
         {R"(,"MemorySize":127)", "'memorySize'"},
         {R"(,"MemorySize":10241)", "'memorySize'"},
         {R"(,"EphemeralStorage":{"Size":100})", "'ephemeralStorage.size'"},
         {R"(,"Environment":{"Variables":{"1A":"x"}})", "environment.variables"},
         {R"(,"Environment":{"Variables":{"AWS_REGION":"x"}})", "reserved keys"},
         {R"(,"Environment":{"Variables":{"A1":")" + std::string(4100, 'v') + "\"}}",
          "4KB limit"},
         {R"(,"Architectures":["arm64"])", "arm64"},
         {R"(,"Architectures":["x86_64","arm64"])", "length equal to 1"},
         {R"(,"PackageType":"Image")", "Image"},
         {R"(,"PackageType":"Tar")", "packageType"},
         {R"(,"Layers":["arn:aws:lambda:us-east-1:123456789012:layer:l:1"])", "Layers"},
         {R"(,"Description":")" + std::string(300, 'd') + "\"", "'description'"},
       }) {
    auto p = parse_create_function(create_body(r.extra), limits);
    CHECK_MESSAGE(!p.value, r.extra.substr(0, 60));
    CHECK(p.error.status == 400);
    CHECK(p.error.type == "InvalidParameterValueException");
    CHECK_MESSAGE(p.error.message.find(r.fragment) != std::string::npos, p.error.message);
  }
}

TEST_CASE("lambda codec: missing and malformed required fields") {
  auto role_bad = create_body();
  role_bad.replace(role_bad.find("arn:aws:iam"), 11, "not-an-arn!");
  auto p = parse_create_function(role_bad, limits);
  CHECK_FALSE(p.value);
  CHECK(p.error.message.find("'role'") != std::string::npos);

  p = parse_create_function(R"({"FunctionName":"f","Role":"arn:aws:iam::123456789012:role/r","Code":{"ZipFile":"UEs="}})", limits);
  CHECK_FALSE(p.value);
  CHECK(p.error.message.find("Runtime and Handler are mandatory") != std::string::npos);

  p = parse_create_function(R"({"FunctionName":"f","Runtime":"python3.11","Handler":"a.b","Role":"arn:aws:iam::123456789012:role/r"})", limits);
  CHECK_FALSE(p.value);
  CHECK(p.error.message.find("Code is required") != std::string::npos);

  p = parse_create_function(R"({"FunctionName":"f","Runtime":"python3.11","Handler":"a.b","Role":"arn:aws:iam::123456789012:role/r","Code":{"ZipFile":"***"}})", limits);
  CHECK_FALSE(p.value);
  CHECK(p.error.message.find("base64") != std::string::npos);

  p = parse_create_function(R"({"FunctionName":"bad name","Runtime":"python3.11","Handler":"a.b","Role":"arn:aws:iam::123456789012:role/r","Code":{"ZipFile":"UEs="}})", limits);
  CHECK_FALSE(p.value);
  CHECK(p.error.message.find("'functionName'") != std::string::npos);
}

TEST_CASE("lambda codec: bodies that are not JSON objects") {
  for (auto body : {"", "{", "[1,2]", "\"x\"", "{\"a\":1,}"}) {
    auto p = parse_create_function(body, limits);
    CHECK_FALSE(p.value);
    CHECK(p.error.status == 400);
    CHECK(p.error.type == "InvalidRequestContentException");
    CHECK(p.error.message.find("Could not parse request body into json") == 0);
  }
}

TEST_CASE("lambda codec: oversized code is a 413") {
  codec_limits small{};
  small.code_size_zipped = 4;
  auto p = parse_create_function(create_body(), small);
  CHECK_FALSE(p.value);
  CHECK(p.error.status == 413);
  CHECK(p.error.type == "RequestEntityTooLargeException");
}

TEST_CASE("lambda codec: update configuration and code") {
  auto c = parse_update_configuration(R"({"Timeout":10,"Environment":{"Variables":{}},"RevisionId":"r1"})", limits);
  REQUIRE_MESSAGE(c.value, c.error.message);
  CHECK(c.value->timeout == 10);
  CHECK_FALSE(c.value->memory_size);
  REQUIRE(c.value->environment);
  CHECK(c.value->environment->empty());
  CHECK(c.value->revision_id == "r1");
  CHECK_FALSE(parse_update_configuration(R"({"MemorySize":1})", limits).value);

  auto u = parse_update_code(R"({"ZipFile":")" + base64_encode("zz") + R"(","Publish":false})", limits);
  REQUIRE_MESSAGE(u.value, u.error.message);
  CHECK(u.value->zip == "zz");
  auto none = parse_update_code("{}", limits);
  CHECK_FALSE(none.value);
  CHECK(none.error.message.find("ZipFile is required") != std::string::npos);
}

TEST_CASE("lambda codec: configuration JSON carries the AWS fields") {
  nimbus::storage::function_record r;
  r.account_id = "123456789012";
  r.name = "f1";
  r.runtime = "python3.11";
  r.role = "arn:aws:iam::123456789012:role/x";
  r.handler = "a.b";
  r.code_sha256 = "abc=";
  r.code_size = 10;
  r.revision_id = "rev-1";
  r.last_modified = "2026-01-01T00:00:00.000+0000";
  auto json = configuration_json(r, "eu-west-1");
  simdjson::dom::parser parser;
  auto doc = parser.parse(json);
  REQUIRE_FALSE(doc.error());
  auto v = doc.value();
  CHECK(std::string_view(v["FunctionArn"]) == "arn:aws:lambda:eu-west-1:123456789012:function:f1");
  CHECK(std::string_view(v["Version"]) == "$LATEST");
  CHECK(std::string_view(v["State"]) == "Active");
  CHECK(std::string_view(v["LastUpdateStatus"]) == "Successful");
  CHECK(std::string_view(v["PackageType"]) == "Zip");
  CHECK(int64_t(v["Timeout"]) == 3);
  CHECK(int64_t(v["CodeSize"]) == 10);
  CHECK(std::string_view(v["Architectures"].at(0)) == "x86_64");
  CHECK(v["Environment"].error() == simdjson::NO_SUCH_FIELD);

  auto err = error_response({404, "ResourceNotFoundException", "Function not found: x"});
  CHECK(err.status == 404);
  CHECK(err.header("x-amzn-ErrorType") == "ResourceNotFoundException");
  CHECK(err.body == R"({"Type":"User","Message":"Function not found: x","message":"Function not found: x"})");
}

TEST_CASE("lambda codec: Put and Update event invoke config bodies") {
  auto put = parse_event_invoke_config(
    R"({"MaximumRetryAttempts":0,"MaximumEventAgeInSeconds":3600,"DestinationConfig":{"OnSuccess":{"Destination":"arn:aws:sqs:us-east-1:123456789012:done"},"OnFailure":{}}})",
    true);
  REQUIRE_MESSAGE(put.value, put.error.message);
  CHECK(put.value->replace);
  CHECK(put.value->maximum_retry_attempts == 0);
  CHECK(put.value->maximum_event_age_seconds == 3600);
  CHECK(put.value->on_success == "arn:aws:sqs:us-east-1:123456789012:done");
  // OnFailure given without Destination: no failure destination.
  CHECK(put.value->on_failure == "");

  auto update = parse_event_invoke_config(R"({"MaximumEventAgeInSeconds":60})", false);
  REQUIRE_MESSAGE(update.value, update.error.message);
  CHECK_FALSE(update.value->replace);
  CHECK_FALSE(update.value->maximum_retry_attempts);
  CHECK(update.value->maximum_event_age_seconds == 60);
  // Absent destinations are absent (Update keeps them), not empty.
  CHECK_FALSE(update.value->on_success);
  CHECK_FALSE(update.value->on_failure);

  // A DestinationConfig alone is a setting (AWS accepts {"OnSuccess": {}}).
  CHECK(parse_event_invoke_config(R"({"DestinationConfig":{"OnSuccess":{}}})", true).value);
  // Both limits are inclusive.
  CHECK(parse_event_invoke_config(R"({"MaximumRetryAttempts":2,"MaximumEventAgeInSeconds":21600})", true).value);
  auto lambda_dest = parse_event_invoke_config(
    R"({"DestinationConfig":{"OnFailure":{"Destination":"arn:aws:lambda:us-east-1:123456789012:function:sink:$LATEST"}}})",
    true);
  REQUIRE_MESSAGE(lambda_dest.value, lambda_dest.error.message);
  CHECK(lambda_dest.value->on_failure == "arn:aws:lambda:us-east-1:123456789012:function:sink:$LATEST");
}

TEST_CASE("lambda codec: invalid event invoke configs name the problem") {
  struct row {
    std::string body;
    std::string type;
    std::string fragment;
  };
  const std::string ipv = "InvalidParameterValueException";
  for (const auto& r : std::vector<row>{
         {"{}", ipv, "You must specify at least one of error handling or destination setting."},
         {"", ipv, "You must specify at least one of error handling or destination setting."},
         {R"({"MaximumRetryAttempts":3})", ipv,
          "Value '3' at 'maximumRetryAttempts' failed to satisfy constraint: Member must have "
          "value less than or equal to 2"},
         {R"({"MaximumRetryAttempts":-1})", ipv, "greater than or equal to 0"},
         {R"({"MaximumEventAgeInSeconds":59})", ipv,
          "Value '59' at 'maximumEventAgeInSeconds' failed to satisfy constraint: Member must "
          "have value greater than or equal to 60"},
         {R"({"MaximumEventAgeInSeconds":21601})", ipv, "less than or equal to 21600"},
         {R"({"MaximumRetryAttempts":"1"})", ipv, "MaximumRetryAttempts must be an integer"},
         {R"({"DestinationConfig":[]})", ipv, "DestinationConfig must be an object"},
         {R"({"DestinationConfig":{"OnSuccess":{"Destination":7}}})", ipv,
          "Destination must be a string"},
         {R"({"DestinationConfig":{"OnSuccess":{"Destination":"arn:aws:sns:us-east-1:123456789012:topic"}}})",
          ipv, "The destination ARN arn:aws:sns:us-east-1:123456789012:topic is invalid. Nimbus delivers to"},
         {R"({"DestinationConfig":{"OnFailure":{"Destination":"arn:aws:lambda:us-east-1:123456789012:function:f:1"}}})",
          ipv, "is invalid"},
         {R"({"DestinationConfig":{"OnFailure":{"Destination":"arn:aws:sqs:us-east-1:123456789012:bad.name"}}})",
          ipv, "is invalid"},
         {R"({"DestinationConfig":{"OnFailure":{"Destination":"not an arn"}}})", ipv, "is invalid"},
         {R"({"DestinationConfig":{"OnFailure":{"Destination":"arn:aws:sqs:us-east-1:123456789012:)"
            + std::string(330, 'q') + "\"}}}",
          ipv, "at 'destinationConfig.onFailure.destination' failed to satisfy constraint: Member must have length less than or equal to 350"},
         {"{not json", "InvalidRequestContentException", "Could not parse request body into json"},
       }) {
    auto p = parse_event_invoke_config(r.body, true);
    CHECK_MESSAGE(!p.value, r.body.substr(0, 80));
    CHECK(p.error.status == 400);
    CHECK(p.error.type == r.type);
    CHECK_MESSAGE(p.error.message.find(r.fragment) != std::string::npos, p.error.message);
  }
}

TEST_CASE("lambda codec: delivery targets Nimbus accepts") {
  auto q = parse_delivery_target("arn:aws:sqs:eu-west-1:123456789012:my_queue-1");
  REQUIRE(q);
  CHECK(q->type == delivery_target::kind::queue);
  CHECK(q->region == "eu-west-1");
  CHECK(q->account_id == "123456789012");
  CHECK(q->name == "my_queue-1");
  auto f = parse_delivery_target("arn:aws:lambda:eu-west-1:123456789012:function:sink");
  REQUIRE(f);
  CHECK(f->type == delivery_target::kind::function);
  CHECK(f->name == "sink");
  CHECK(parse_delivery_target("arn:aws:lambda:eu-west-1:123456789012:function:sink:$LATEST"));
  CHECK(parse_delivery_target("arn:aws:sqs:eu-west-1:123456789012:" + std::string(80, 'q')));
  for (const auto& bad : std::vector<std::string>{"", "arn:aws:sqs:eu-west-1:123456789012:", "arn:aws:sqs:eu-west-1:12345:q",
                          "arn:aws:sqs:eu-west-1:123456789012:q:extra", "arn:aws:sqs::123456789012:q",
                          "arn:aws-cn:sqs:eu-west-1:123456789012:q",
                          "arn:aws:sns:eu-west-1:123456789012:t",
                          "arn:aws:events:eu-west-1:123456789012:event-bus/default",
                          "arn:aws:lambda:eu-west-1:123456789012:function:sink:1",
                          "arn:aws:lambda:eu-west-1:123456789012:function:bad.name",
                          "arn:aws:lambda:eu-west-1:123456789012:layer:l",
                          "arn:aws:sqs:eu-west-1:123456789012:" + std::string(81, 'q')})
    CHECK_MESSAGE(!parse_delivery_target(bad), bad);
}

TEST_CASE("lambda codec: DeadLetterConfig on CreateFunction and UpdateFunctionConfiguration") {
  auto p = parse_create_function(
    create_body(R"(,"DeadLetterConfig":{"TargetArn":"arn:aws:sqs:us-east-1:123456789012:dlq"})"), limits);
  REQUIRE_MESSAGE(p.value, p.error.message);
  CHECK(p.value->dead_letter_target == "arn:aws:sqs:us-east-1:123456789012:dlq");
  CHECK(parse_create_function(create_body(), limits).value->dead_letter_target.empty());
  auto sns = parse_create_function(
    create_body(R"(,"DeadLetterConfig":{"TargetArn":"arn:aws:sns:us-east-1:123456789012:t"})"), limits);
  CHECK_FALSE(sns.value);
  CHECK(sns.error.type == "InvalidParameterValueException");
  CHECK(sns.error.message.find("dead-letter target ARN arn:aws:sns:us-east-1:123456789012:t is invalid")
        != std::string::npos);

  auto set = parse_update_configuration(
    R"({"DeadLetterConfig":{"TargetArn":"arn:aws:sqs:us-east-1:123456789012:dlq"}})", limits);
  REQUIRE_MESSAGE(set.value, set.error.message);
  CHECK(set.value->dead_letter_target == "arn:aws:sqs:us-east-1:123456789012:dlq");
  // An empty TargetArn removes it; no DeadLetterConfig leaves it alone.
  auto clear = parse_update_configuration(R"({"DeadLetterConfig":{"TargetArn":""}})", limits);
  REQUIRE(clear.value);
  CHECK(clear.value->dead_letter_target == "");
  CHECK_FALSE(parse_update_configuration(R"({"Timeout":5})", limits).value->dead_letter_target);
  auto lambda_target = parse_update_configuration(
    R"({"DeadLetterConfig":{"TargetArn":"arn:aws:lambda:us-east-1:123456789012:function:f"}})", limits);
  CHECK_FALSE(lambda_target.value);
  CHECK(parse_update_configuration(R"({"DeadLetterConfig":{"TargetArn":1}})", limits).error.message
        == "Field TargetArn must be a string");
}

TEST_CASE("lambda codec: event invoke config and DeadLetterConfig JSON as AWS renders them") {
  nimbus::storage::event_invoke_config c;
  c.maximum_retry_attempts = 0;
  c.maximum_event_age_seconds = -1;
  c.on_failure = "arn:aws:sqs:us-east-1:123456789012:failed";
  c.last_modified_ms = 1573686021479;
  auto arn = "arn:aws:lambda:us-east-1:123456789012:function:f1:$LATEST";
  CHECK(event_invoke_config_json(arn, c)
        == R"({"LastModified":1573686021.479,"FunctionArn":"arn:aws:lambda:us-east-1:123456789012:function:f1:$LATEST",)"
           R"("MaximumRetryAttempts":0,"DestinationConfig":{"OnSuccess":{},"OnFailure":{"Destination":"arn:aws:sqs:us-east-1:123456789012:failed"}}})");
  c.last_modified_ms = 1573686021005;
  c.maximum_retry_attempts = -1;
  c.maximum_event_age_seconds = 60;
  auto json = event_invoke_config_json(arn, c);
  simdjson::dom::parser parser;
  auto doc = parser.parse(json);
  REQUIRE_FALSE(doc.error());
  CHECK(double(doc.value()["LastModified"]) == doctest::Approx(1573686021.005));
  CHECK(doc.value()["MaximumRetryAttempts"].error() == simdjson::NO_SUCH_FIELD);
  CHECK(int64_t(doc.value()["MaximumEventAgeInSeconds"]) == 60);

  CHECK(list_event_invoke_configs_json({}, "") == R"({"FunctionEventInvokeConfigs":[]})");
  auto list = list_event_invoke_configs_json({{arn, c}}, "bWFya2Vy");
  auto ldoc = parser.parse(list);
  REQUIRE_FALSE(ldoc.error());
  CHECK(std::string_view(ldoc.value()["FunctionEventInvokeConfigs"].at(0)["FunctionArn"]) == arn);
  CHECK(std::string_view(ldoc.value()["NextMarker"]) == "bWFya2Vy");

  nimbus::storage::function_record r;
  r.account_id = "123456789012";
  r.name = "f1";
  CHECK(configuration_json(r, "us-east-1").find("DeadLetterConfig") == std::string::npos);
  r.dead_letter_target = "arn:aws:sqs:us-east-1:123456789012:dlq";
  CHECK(configuration_json(r, "us-east-1").find(R"("DeadLetterConfig":{"TargetArn":"arn:aws:sqs:us-east-1:123456789012:dlq"})")
        != std::string::npos);
}

namespace {

const std::string digest_hex(64, 'a');

std::string image_body(std::string code, std::string extra = "") {
  return R"({"FunctionName":"img","PackageType":"Image","Role":"arn:aws:iam::123456789012:role/lambda","Code":)"
         + code + extra + "}";
}

} // namespace

TEST_CASE("lambda codec: image URIs in every accepted form") {
  struct row {
    std::string uri;
    std::string repository, tag, digest;
  };
  for (const auto& r : std::vector<row>{
         {"app:v1", "app", "v1", ""},
         {"team/web-app:1.0_rc", "team/web-app", "1.0_rc", ""},
         {"app@sha256:" + digest_hex, "app", "", "sha256:" + digest_hex},
         {"123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1", "app", "v1", ""},
         {"123456789012.dkr.ecr.us-east-1.amazonaws.com/a/b@sha256:" + digest_hex, "a/b", "",
          "sha256:" + digest_hex},
       }) {
    image_ref ref;
    auto err = parse_image_uri(r.uri, "123456789012", "us-east-1", ref);
    CHECK_MESSAGE(!err, r.uri << ": " << (err ? err->message : ""));
    CHECK(ref.repository == r.repository);
    CHECK(ref.tag == r.tag);
    CHECK(ref.digest == r.digest);
    CHECK(ref.reference() == (r.tag.empty() ? r.repository + "@" + r.digest : r.repository + ":" + r.tag));
  }
  struct bad {
    std::string uri;
    std::string fragment;
  };
  for (const auto& b : std::vector<bad>{
         {"", "is not valid"},
         {"app", "tag"},
         {"App:v1", "repository name"},
         {"app:", "tag"},
         {"app:-x", "tag"},
         {"app@sha256:" + std::string(63, 'a'), "digest"},
         {"app@sha256:" + std::string(64, 'A'), "digest"},
         {"app@md5:" + digest_hex, "digest"},
         {"docker.io/library/python:3.11", "own registry"},
         {"localhost:5000/app:v1", "own registry"},
         {"123456789012.dkr.ecr.us-east-1.amazonaws.com.evil/app:v1", "own registry"},
         {"210987654321.dkr.ecr.us-east-1.amazonaws.com/app:v1", "account 210987654321 in us-east-1"},
         {"123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:v1", "account 123456789012 in eu-west-1"},
         {std::string(600, 'a') + ":v1", "is not valid"},
       }) {
    image_ref ref;
    auto err = parse_image_uri(b.uri, "123456789012", "us-east-1", ref);
    REQUIRE_MESSAGE(err, b.uri);
    CHECK(err->status == 400);
    CHECK(err->type == "InvalidParameterValueException");
    CHECK_MESSAGE(err->message.find(b.fragment) != std::string::npos, err->message);
    CHECK(err->message.rfind("Source image ", 0) == 0);
  }
  // Without an account and region only the syntax is checked.
  image_ref ref;
  CHECK_FALSE(parse_image_uri("210987654321.dkr.ecr.eu-west-1.amazonaws.com/app:v1", "", "", ref));
}

TEST_CASE("lambda codec: CreateFunction with PackageType Image") {
  auto p = parse_create_function(
    image_body(R"({"ImageUri":"app:v1"})",
               R"(,"ImageConfig":{"EntryPoint":["/bin/sh","-c"],"Command":[],"WorkingDirectory":"/srv"},"Timeout":30)"),
    limits);
  REQUIRE_MESSAGE(p.value, p.error.message);
  CHECK(p.value->package_type == "Image");
  CHECK(p.value->image_uri == "app:v1");
  CHECK(p.value->zip.empty());
  CHECK(p.value->runtime.empty());
  CHECK(p.value->handler.empty());
  CHECK(p.value->timeout == 30);
  const auto& c = p.value->image_config;
  CHECK(c.entry_point_set);
  CHECK(c.entry_point == std::vector<std::string>{"/bin/sh", "-c"});
  CHECK(c.command_set);
  CHECK(c.command.empty());
  CHECK(c.working_directory_set);
  CHECK(c.working_directory == "/srv");

  // No ImageConfig: nothing is set.
  auto plain = parse_create_function(image_body(R"({"ImageUri":"app@sha256:)" + digest_hex + "\"}"), limits);
  REQUIRE_MESSAGE(plain.value, plain.error.message);
  CHECK_FALSE(plain.value->image_config.any_set());
  // Zip stays the default.
  auto zip = parse_create_function(create_body(), limits);
  REQUIRE(zip.value);
  CHECK(zip.value->package_type == "Zip");
  CHECK(zip.value->image_uri.empty());
}

TEST_CASE("lambda codec: PackageType mismatches are InvalidParameterValueException") {
  struct row {
    std::string body;
    std::string fragment;
  };
  const std::string zip64 = base64_encode("PK");
  for (const auto& r : std::vector<row>{
         {image_body(R"({"ImageUri":"app:v1"})", R"(,"Runtime":"python3.11")"),
          "Please don't provide Handler or Runtime or Layer when the intended function PackageType is Image."},
         {image_body(R"({"ImageUri":"app:v1"})", R"(,"Handler":"a.b")"), "Handler or Runtime or Layer"},
         {image_body(R"({"ImageUri":"app:v1"})", R"(,"Layers":["arn:aws:lambda:us-east-1:123456789012:layer:l:1"])"),
          "Handler or Runtime or Layer"},
         {image_body("{}"), "Please provide ImageUri when the intended function PackageType is Image."},
         {image_body(R"({"ZipFile":")" + zip64 + "\"}"), "Please don't provide ZipFile"},
         {image_body(R"({"ImageUri":"app:v1","ZipFile":")" + zip64 + "\"}"), "only one source"},
         {image_body(R"({"ImageUri":"docker.io/x/y:1"})"), "Source image docker.io/x/y:1 is not valid"},
         {R"({"FunctionName":"f","Runtime":"python3.11","Handler":"a.b","Role":"arn:aws:iam::123456789012:role/lambda","Code":{"ImageUri":"app:v1"}})",
          "Please don't provide ImageUri when the intended function PackageType is Zip."},
         {create_body(R"(,"ImageConfig":{"Command":["x"]})"), "ImageConfig is supported only for functions with PackageType Image"},
         {image_body(R"({"ImageUri":"app:v1"})", R"(,"ImageConfig":{"WorkingDirectory":"srv"})"), "absolute"},
         {image_body(R"({"ImageUri":"app:v1"})", R"(,"ImageConfig":{"WorkingDirectory":""})"), "absolute"},
         {image_body(R"({"ImageUri":"app:v1"})", R"(,"ImageConfig":{"WorkingDirectory":"/)" + std::string(1000, 'w') + "\"}"),
          "imageConfig.workingDirectory"},
         {image_body(R"({"ImageUri":"app:v1"})", R"(,"ImageConfig":{"Command":"run"})"), "Command must be a list"},
         {image_body(R"({"ImageUri":"app:v1"})", R"(,"ImageConfig":{"Command":[1]})"), "list of strings"},
         {image_body(R"({"ImageUri":"app:v1"})", R"(,"ImageConfig":{"EntryPoint":[")" + std::string(1001, 'e') + "\"]}"),
          "imageConfig.entryPoint.member"},
         {image_body(R"({"ImageUri":"app:v1"})", R"(,"ImageConfig":{"EntryPoint":["a\u0000b"]})"), "NUL"},
       }) {
    auto p = parse_create_function(r.body, limits);
    CHECK_MESSAGE(!p.value, r.body.substr(0, 120));
    CHECK(p.error.status == 400);
    CHECK(p.error.type == "InvalidParameterValueException");
    CHECK_MESSAGE(p.error.message.find(r.fragment) != std::string::npos, p.error.message);
  }
  // The list bounds: 1500 entries pass, 1501 do not.
  auto list_of = [](size_t n) {
    std::string out = "[";
    for (size_t i = 0; i < n; ++i)
      out += i ? ",\"x\"" : "\"x\"";
    return out + "]";
  };
  auto at_limit = parse_create_function(
    image_body(R"({"ImageUri":"app:v1"})", R"(,"ImageConfig":{"Command":)" + list_of(1500) + "}"), limits);
  CHECK_MESSAGE(at_limit.value, at_limit.error.message);
  auto over = parse_create_function(
    image_body(R"({"ImageUri":"app:v1"})", R"(,"ImageConfig":{"Command":)" + list_of(1501) + "}"), limits);
  REQUIRE_FALSE(over.value);
  CHECK(over.error.message.find("imageConfig.command") != std::string::npos);
}

TEST_CASE("lambda codec: UpdateFunctionCode and UpdateFunctionConfiguration for Image functions") {
  auto u = parse_update_code(R"({"ImageUri":"app:v2","RevisionId":"r"})", limits);
  REQUIRE_MESSAGE(u.value, u.error.message);
  CHECK(u.value->image_uri == "app:v2");
  CHECK(u.value->zip.empty());
  CHECK(u.value->revision_id == "r");
  CHECK_FALSE(parse_update_code(R"({"ImageUri":"App:v2"})", limits).value);
  auto both = parse_update_code(R"({"ImageUri":"app:v2","ZipFile":")" + base64_encode("z") + "\"}", limits);
  CHECK_FALSE(both.value);

  nimbus::storage::function_record zip_fn;
  nimbus::storage::function_record image_fn;
  image_fn.package_type = "Image";
  auto zip_update = parse_update_code(R"({"ZipFile":")" + base64_encode("z") + "\"}", limits);
  REQUIRE(zip_update.value);
  CHECK_FALSE(check_code_update(zip_fn, *zip_update.value));
  CHECK_FALSE(check_code_update(image_fn, *u.value));
  auto e = check_code_update(zip_fn, *u.value);
  REQUIRE(e);
  CHECK(e->type == "InvalidParameterValueException");
  CHECK(e->message == "Please don't provide ImageUri when updating a function with packageType Zip.");
  e = check_code_update(image_fn, *zip_update.value);
  REQUIRE(e);
  CHECK(e->message == "Please provide ImageUri when updating a function with packageType Image.");

  auto c = parse_update_configuration(R"({"ImageConfig":{"Command":["serve","--port=8080"]},"Timeout":5})", limits);
  REQUIRE_MESSAGE(c.value, c.error.message);
  REQUIRE(c.value->image_config);
  CHECK(c.value->image_config->command_set);
  CHECK_FALSE(c.value->image_config->entry_point_set);
  CHECK(c.value->image_config->command == std::vector<std::string>{"serve", "--port=8080"});
  CHECK_FALSE(check_configuration_patch(image_fn, *c.value));
  e = check_configuration_patch(zip_fn, *c.value);
  REQUIRE(e);
  CHECK(e->status == 400);
  auto runtime = parse_update_configuration(R"({"Runtime":"python3.12"})", limits);
  REQUIRE(runtime.value);
  CHECK_FALSE(runtime.value->image_config);
  CHECK_FALSE(check_configuration_patch(zip_fn, *runtime.value));
  e = check_configuration_patch(image_fn, *runtime.value);
  REQUIRE(e);
  CHECK(e->message.find("Handler or Runtime") != std::string::npos);
  CHECK_FALSE(parse_update_configuration(R"({"ImageConfig":{"WorkingDirectory":"rel"}})", limits).value);
}

TEST_CASE("lambda codec: Image functions render PackageType, ImageConfigResponse and ECR code") {
  nimbus::storage::function_record r;
  r.account_id = "123456789012";
  r.name = "img";
  r.role = "arn:aws:iam::123456789012:role/x";
  r.package_type = "Image";
  r.image_uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1";
  r.resolved_image_uri = "app@sha256:" + digest_hex;
  r.image_config.command = {"serve"};
  r.image_config.command_set = true;
  r.image_config.entry_point_set = true; // an empty EntryPoint that was given
  r.revision_id = "rev";
  simdjson::dom::parser parser;
  {
    auto json = configuration_json(r, "us-east-1");
    auto doc = parser.parse(json);
    REQUIRE_FALSE(doc.error());
    auto v = doc.value();
    CHECK(std::string_view(v["PackageType"]) == "Image");
    CHECK(v["Runtime"].error() == simdjson::NO_SUCH_FIELD);
    CHECK(v["Handler"].error() == simdjson::NO_SUCH_FIELD);
    auto ic = v["ImageConfigResponse"]["ImageConfig"];
    REQUIRE_FALSE(ic.error());
    CHECK(std::string_view(ic["Command"].at(0)) == "serve");
    CHECK(simdjson::dom::array(ic["EntryPoint"]).size() == 0);
    CHECK(ic["WorkingDirectory"].error() == simdjson::NO_SUCH_FIELD);
  }
  {
    auto json = get_function_json(r, "us-east-1", "http://ignored");
    auto doc = parser.parse(json);
    REQUIRE_FALSE(doc.error());
    auto code = doc.value()["Code"];
    CHECK(std::string_view(code["RepositoryType"]) == "ECR");
    CHECK(std::string_view(code["ImageUri"]) == r.image_uri);
    CHECK(std::string_view(code["ResolvedImageUri"]) == r.resolved_image_uri);
    CHECK(code["Location"].error() == simdjson::NO_SUCH_FIELD);
  }
  // Without ImageConfig there is no ImageConfigResponse; Zip functions keep
  // Runtime, Handler and their S3 code location.
  r.image_config = {};
  CHECK(configuration_json(r, "us-east-1").find("ImageConfigResponse") == std::string::npos);
  nimbus::storage::function_record z = r;
  z.package_type = "Zip";
  z.runtime = "python3.11";
  z.handler = "a.b";
  auto json = get_function_json(z, "us-east-1", "http://code");
  auto doc = parser.parse(json);
  REQUIRE_FALSE(doc.error());
  CHECK(std::string_view(doc.value()["Code"]["RepositoryType"]) == "S3");
  CHECK(std::string_view(doc.value()["Code"]["Location"]) == "http://code");
  CHECK(std::string_view(doc.value()["Configuration"]["Runtime"]) == "python3.11");
}
