#include "nimbus/actors/frontend.hpp"
#include "nimbus/actors/registry.hpp"
#include "nimbus/storage/digest.hpp"
#include "nimbus/transport/sigv4.hpp"

#include "../support/memory_function_store.hpp"
#include "../support/zip_builder.hpp"
#include "fixture.hpp"

#include <doctest/doctest.h>
#include <simdjson.h>

#include <thread>

using namespace nimbus;
using transport::http_request;
using transport::http_response;

namespace {

using namespace std::chrono_literals;

const config::account dev{"123456789012", "AKIAFRONTENDTEST0001", "frontend-test-secret-0001"};
const config::account other{"210987654321", "AKIAFRONTENDTEST0002", "frontend-test-secret-0002"};

struct frontend_fixture : test::actor_fixture {
  std::shared_ptr<test::memory_function_store> store
    = std::make_shared<test::memory_function_store>();
  std::shared_ptr<transport::api_metrics> metrics = std::make_shared<transport::api_metrics>();
  std::shared_ptr<std::chrono::system_clock::time_point> clock
    = std::make_shared<std::chrono::system_clock::time_point>(
      std::chrono::system_clock::from_time_t(1'800'000'000));
  registry_actor registry;
  frontend_actor frontend;
  std::string zip = test::make_zip({{"app.py", "def handler(e, c): return 1\n"}});

  frontend_fixture() {
    registry_config rc;
    rc.now_ms = [] { return int64_t{0}; };
    registry = spawn_registry(sys, rc, store, {});
    frontend_config fc;
    fc.accounts = {dev, other};
    fc.metrics = metrics;
    auto c = clock;
    fc.now = [c] { return *c; };
    REQUIRE(validate(fc).empty());
    frontend = spawn_frontend(sys, fc, registry);
    sched.run();
  }

  ~frontend_fixture() {
    stop(frontend);
    stop(registry);
  }

  http_request make(std::string method, std::string target, std::string body = {}) {
    http_request req;
    req.method = std::move(method);
    req.target = std::move(target);
    req.body = std::move(body);
    req.headers.emplace_back("Host", "127.0.0.1:9000");
    req.request_id = storage::random_uuid();
    return req;
  }

  http_request signed_req(std::string method, std::string target, std::string body = {},
                          const config::account& who = dev, std::string secret = {}) {
    auto req = make(std::move(method), std::move(target), std::move(body));
    transport::sigv4::sign(req, {who.access_key_id,
                                 secret.empty() ? who.secret_access_key : secret, "us-east-1",
                                 "lambda", *clock});
    return req;
  }

  http_response send(http_request req) {
    auto res = request<http_response>(frontend, std::move(req));
    REQUIRE(res);
    return *res;
  }

  std::string create_body(const std::string& name) {
    return R"({"FunctionName":")" + name
           + R"(","Runtime":"python3.11","Role":"arn:aws:iam::123456789012:role/r","Handler":"app.handler","Code":{"ZipFile":")"
           + storage::base64_encode(zip) + "\"}}";
  }
};

std::string error_type(const http_response& res) {
  return std::string{res.header("x-amzn-ErrorType").value_or("")};
}

} // namespace

TEST_CASE_FIXTURE(frontend_fixture, "frontend: health needs no signature, the API does") {
  auto health = send(make("GET", "/health"));
  CHECK(health.status == 200);
  CHECK(health.body.find("\"ok\"") != std::string::npos);
  auto unsigned_list = send(make("GET", "/2015-03-31/functions/"));
  CHECK(unsigned_list.status == 403);
  CHECK(error_type(unsigned_list) == "MissingAuthenticationTokenException");
}

TEST_CASE_FIXTURE(frontend_fixture, "frontend: signature failures map to AWS errors") {
  auto wrong = send(signed_req("GET", "/2015-03-31/functions/", {}, dev, "not-the-secret-at-all"));
  CHECK(wrong.status == 403);
  CHECK(error_type(wrong) == "InvalidSignatureException");
  config::account stranger{"333333333333", "AKIASTRANGER00000001", "whatever-secret-000"};
  auto unknown = send(signed_req("GET", "/2015-03-31/functions/", {}, stranger));
  CHECK(unknown.status == 403);
  CHECK(error_type(unknown) == "UnrecognizedClientException");
  auto req = signed_req("GET", "/2015-03-31/functions/");
  *clock += 6min;
  auto expired = send(req);
  CHECK(expired.status == 403);
  CHECK(error_type(expired) == "InvalidSignatureException");
  CHECK(expired.body.find("Signature expired") != std::string::npos);
  *clock -= 2min;
  CHECK(send(req).status == 200);
}

TEST_CASE_FIXTURE(frontend_fixture, "frontend: create, get, list, update and delete") {
  auto created = send(signed_req("POST", "/2015-03-31/functions", create_body("f1")));
  REQUIRE_MESSAGE(created.status == 201, created.body);
  simdjson::dom::parser parser;
  auto cfg = parser.parse(created.body).value();
  CHECK(std::string_view(cfg["FunctionArn"])
        == "arn:aws:lambda:us-east-1:123456789012:function:f1");
  auto revision = std::string{std::string_view(cfg["RevisionId"])};

  auto got = send(signed_req("GET", "/2015-03-31/functions/f1%3A%24LATEST"));
  REQUIRE(got.status == 200);
  auto doc = parser.parse(got.body).value();
  CHECK(std::string_view(doc["Configuration"]["RevisionId"]) == revision);
  std::string location{std::string_view(doc["Code"]["Location"])};
  CHECK(location.rfind("http://127.0.0.1:9000/nimbus/code/123456789012/f1/", 0) == 0);

  // The download link works without a signature until it expires.
  auto link = location.substr(std::string{"http://127.0.0.1:9000"}.size());
  auto download = send(make("GET", link));
  CHECK(download.status == 200);
  CHECK(download.body == zip);
  auto forged = link;
  forged.back() = forged.back() == '0' ? '1' : '0';
  CHECK(send(make("GET", forged)).status == 403);
  *clock += 11min;
  CHECK(send(make("GET", link)).status == 403);
  *clock -= 11min;

  auto listed = send(signed_req("GET", "/2015-03-31/functions/?MaxItems=10"));
  REQUIRE(listed.status == 200);
  CHECK(listed.body.find("\"FunctionName\":\"f1\"") != std::string::npos);

  auto conflict = send(signed_req("PUT", "/2015-03-31/functions/f1/configuration",
                                  R"({"Timeout":10,"RevisionId":"stale"})"));
  CHECK(conflict.status == 412);
  CHECK(error_type(conflict) == "PreconditionFailedException");
  auto updated = send(signed_req("PUT", "/2015-03-31/functions/f1/configuration",
                                 R"({"Timeout":10,"RevisionId":")" + revision + "\"}"));
  REQUIRE(updated.status == 200);
  CHECK(updated.body.find("\"Timeout\":10") != std::string::npos);

  auto deleted = send(signed_req("DELETE", "/2015-03-31/functions/f1"));
  CHECK(deleted.status == 204);
  CHECK(deleted.body.empty());
  auto gone = send(signed_req("GET", "/2015-03-31/functions/f1"));
  CHECK(gone.status == 404);
  CHECK(error_type(gone) == "ResourceNotFoundException");
  CHECK(gone.body.find("Function not found: arn:aws:lambda:us-east-1:123456789012:function:f1")
        != std::string::npos);
}

TEST_CASE_FIXTURE(frontend_fixture, "frontend: another account's ARN is not found") {
  REQUIRE(send(signed_req("POST", "/2015-03-31/functions", create_body("f1"))).status == 201);
  auto arn = std::string{"arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af1"};
  CHECK(send(signed_req("GET", "/2015-03-31/functions/" + arn)).status == 200);
  auto res = send(signed_req("GET", "/2015-03-31/functions/" + arn, {}, other));
  CHECK(res.status == 404);
  CHECK(error_type(res) == "ResourceNotFoundException");
  CHECK(send(signed_req("GET", "/2015-03-31/functions/f1", {}, other)).status == 404);
  auto wrong_region = std::string{"arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Af1"};
  CHECK(send(signed_req("GET", "/2015-03-31/functions/" + wrong_region)).status == 404);
}

TEST_CASE_FIXTURE(frontend_fixture, "frontend: bad requests get AWS error names") {
  auto not_json = send(signed_req("POST", "/2015-03-31/functions", "{nope"));
  CHECK(not_json.status == 400);
  CHECK(error_type(not_json) == "InvalidRequestContentException");
  auto bad_name = send(signed_req("GET", "/2015-03-31/functions/bad%20name"));
  CHECK(bad_name.status == 400);
  CHECK(error_type(bad_name) == "InvalidParameterValueException");
  auto bad_items = send(signed_req("GET", "/2015-03-31/functions/?MaxItems=0"));
  CHECK(bad_items.status == 400);
  auto unknown = send(signed_req("GET", "/2099-01-01/whatever"));
  CHECK(unknown.status == 404);
  CHECK(error_type(unknown) == "UnknownOperationException");
  auto delete_latest = send(signed_req("DELETE", "/2015-03-31/functions/f1?Qualifier=%24LATEST"));
  CHECK(delete_latest.status == 400);
}

TEST_CASE_FIXTURE(frontend_fixture, "frontend: metrics count requests by operation and status") {
  send(signed_req("GET", "/2015-03-31/functions/"));
  send(signed_req("GET", "/2015-03-31/functions/nope"));
  auto res = send(make("GET", "/metrics"));
  CHECK(res.status == 200);
  CHECK(res.body.find("nimbus_api_requests_total{operation=\"ListFunctions\",status=\"200\"} 1")
        != std::string::npos);
  CHECK(res.body.find("nimbus_api_requests_total{operation=\"GetFunction\",status=\"404\"} 1")
        != std::string::npos);
  CHECK(res.body.find("nimbus_api_request_duration_seconds_count{operation=\"ListFunctions\"} 1")
        != std::string::npos);
}

TEST_CASE_FIXTURE(frontend_fixture, "frontend: the metadata cache follows registry changes") {
  REQUIRE(send(signed_req("POST", "/2015-03-31/functions", create_body("f1"))).status == 201);
  auto first = send(signed_req("GET", "/2015-03-31/functions/f1/configuration"));
  auto second = send(signed_req("GET", "/2015-03-31/functions/f1/configuration"));
  CHECK(first.body == second.body);
  auto metrics_text = send(make("GET", "/metrics")).body;
  CHECK(metrics_text.find("nimbus_frontend_metadata_cache_total{result=\"hit\"} 1")
        != std::string::npos);
  CHECK(metrics_text.find("nimbus_frontend_metadata_cache_total{result=\"miss\"} 1")
        != std::string::npos);
  // A change made at the registry directly (as another frontend would) must
  // reach this frontend's cache.
  transport::lambda::configuration_patch patch;
  patch.timeout = 77;
  REQUIRE(request<storage::function_record>(registry, update_config_atom::value, dev.id,
                                            std::string{"f1"}, patch));
  auto after = send(signed_req("GET", "/2015-03-31/functions/f1/configuration"));
  CHECK(after.body.find("\"Timeout\":77") != std::string::npos);
  REQUIRE(request<bool>(registry, delete_atom::value, dev.id, std::string{"f1"}));
  CHECK(send(signed_req("GET", "/2015-03-31/functions/f1/configuration")).status == 404);
}

TEST_CASE_FIXTURE(frontend_fixture, "frontend: event invoke config through the API") {
  const std::string path = "/2019-09-25/functions/f1/event-invoke-config";
  const std::string latest_arn = "arn:aws:lambda:us-east-1:123456789012:function:f1:$LATEST";
  const std::string queue = "arn:aws:sqs:us-east-1:123456789012:failures";
  // Unknown function: AWS's two wordings.
  auto put_missing = send(signed_req("PUT", path, R"({"MaximumRetryAttempts":1})"));
  CHECK(put_missing.status == 404);
  CHECK(put_missing.body.find("The function doesn't exist.") != std::string::npos);
  auto get_missing = send(signed_req("GET", path));
  CHECK(get_missing.status == 404);
  CHECK(error_type(get_missing) == "ResourceNotFoundException");
  CHECK(get_missing.body.find("The function " + latest_arn + " doesn't have an EventInvokeConfig")
        != std::string::npos);
  CHECK(send(signed_req("GET", path + "/list")).status == 404);

  REQUIRE(send(signed_req("POST", "/2015-03-31/functions", create_body("f1"))).status == 201);
  auto revision_before = send(signed_req("GET", "/2015-03-31/functions/f1/configuration")).body;
  CHECK(send(signed_req("GET", path)).status == 404);
  auto empty_list = send(signed_req("GET", path + "/list"));
  CHECK(empty_list.status == 200);
  CHECK(empty_list.body == R"({"FunctionEventInvokeConfigs":[]})");
  auto update_missing = send(signed_req("POST", path, R"({"MaximumRetryAttempts":1})"));
  CHECK(update_missing.status == 404);
  CHECK(update_missing.body.find("doesn't have an EventInvokeConfig") != std::string::npos);

  auto put = send(signed_req(
    "PUT", path,
    R"({"MaximumRetryAttempts":0,"DestinationConfig":{"OnFailure":{"Destination":")" + queue + R"("}}})"));
  REQUIRE(put.status == 200);
  CHECK(put.body
        == R"({"LastModified":0.000,"FunctionArn":")" + latest_arn
             + R"(","MaximumRetryAttempts":0,"DestinationConfig":{"OnSuccess":{},"OnFailure":{"Destination":")"
             + queue + R"("}}})");
  // Read after the change (the cache was filled before it).
  auto got = send(signed_req("GET", path + "?Qualifier=%24LATEST"));
  CHECK(got.status == 200);
  CHECK(got.body == put.body);
  auto merged = send(signed_req("POST", path, R"({"MaximumEventAgeInSeconds":300})"));
  CHECK(merged.status == 200);
  CHECK(merged.body.find(R"("MaximumRetryAttempts":0,"MaximumEventAgeInSeconds":300)")
        != std::string::npos);
  CHECK(merged.body.find(queue) != std::string::npos);
  auto list = send(signed_req("GET", path + "/list?MaxItems=1"));
  CHECK(list.status == 200);
  CHECK(list.body == R"({"FunctionEventInvokeConfigs":[)" + merged.body + "]}");
  // Past the last config there is nothing.
  auto after = send(signed_req("GET", path + "/list?Marker=" + storage::base64_encode("$LATEST")));
  CHECK(after.body == R"({"FunctionEventInvokeConfigs":[]})");
  // The function's RevisionId did not change.
  CHECK(send(signed_req("GET", "/2015-03-31/functions/f1/configuration")).body == revision_before);

  // Qualifiers other than $LATEST do not exist on this node.
  auto versioned = send(signed_req("GET", path + "?Qualifier=1"));
  CHECK(versioned.status == 404);
  CHECK(versioned.body.find("function:f1:1 doesn't have an EventInvokeConfig") != std::string::npos);
  CHECK(send(signed_req("PUT", "/2019-09-25/functions/f1%3Aprod/event-invoke-config",
                        R"({"MaximumRetryAttempts":1})"))
          .status
        == 404);
  CHECK(send(signed_req("DELETE", path + "?Qualifier=prod")).status == 404);
  // Bad input.
  auto bad = send(signed_req("PUT", path, R"({"MaximumRetryAttempts":5})"));
  CHECK(bad.status == 400);
  CHECK(error_type(bad) == "InvalidParameterValueException");
  auto self_dest = send(signed_req(
    "PUT", path,
    R"({"DestinationConfig":{"OnSuccess":{"Destination":"arn:aws:lambda:us-east-1:123456789012:function:f1"}}})"));
  CHECK(self_dest.status == 400);
  CHECK(self_dest.body.find("destination for itself") != std::string::npos);
  CHECK(send(signed_req("GET", path + "/list?MaxItems=51")).status == 400);
  // Another account sees none of it.
  CHECK(send(signed_req("GET", path, {}, other)).status == 404);

  auto deleted = send(signed_req("DELETE", path));
  CHECK(deleted.status == 204);
  CHECK(deleted.body.empty());
  CHECK(send(signed_req("GET", path)).status == 404);
  CHECK(send(signed_req("DELETE", path)).status == 404);
  auto metrics_text = send(make("GET", "/metrics")).body;
  CHECK(metrics_text.find(
          "nimbus_api_requests_total{operation=\"DeleteFunctionEventInvokeConfig\",status=\"204\"} 1")
        != std::string::npos);
}

TEST_CASE_FIXTURE(frontend_fixture, "frontend: DeadLetterConfig on create and update configuration") {
  const std::string dlq = "arn:aws:sqs:us-east-1:123456789012:dlq";
  auto body = create_body("f1");
  body.insert(body.size() - 1, R"(,"DeadLetterConfig":{"TargetArn":")" + dlq + "\"}");
  auto created = send(signed_req("POST", "/2015-03-31/functions", body));
  REQUIRE(created.status == 201);
  CHECK(created.body.find(R"("DeadLetterConfig":{"TargetArn":")" + dlq + "\"}") != std::string::npos);
  auto cleared = send(signed_req("PUT", "/2015-03-31/functions/f1/configuration",
                                 R"({"DeadLetterConfig":{"TargetArn":""}})"));
  CHECK(cleared.status == 200);
  CHECK(cleared.body.find("DeadLetterConfig") == std::string::npos);
  auto foreign = send(signed_req("PUT", "/2015-03-31/functions/f1/configuration",
                                 R"({"DeadLetterConfig":{"TargetArn":"arn:aws:sqs:us-east-1:210987654321:dlq"}})"));
  CHECK(foreign.status == 400);
  CHECK(error_type(foreign) == "InvalidParameterValueException");
}

TEST_CASE_FIXTURE(frontend_fixture, "frontend: frontends of one node share metrics, the cache and code links") {
  // nimbusd runs one frontend per io thread, with one invoke_metrics and one
  // download key between them.
  auto shared = std::make_shared<invoke_metrics>();
  frontend_config fc;
  fc.accounts = {dev, other};
  fc.metrics = metrics;
  auto c = clock;
  fc.now = [c] { return *c; };
  fc.invocations = shared;
  fc.cache = std::make_shared<metadata_cache>();
  fc.download_key = storage::random_bytes(32);
  auto a = spawn_frontend(sys, fc, registry);
  auto b = spawn_frontend(sys, fc, registry);
  sched.run();
  auto via = [&](const frontend_actor& f, http_request req) {
    auto res = request<http_response>(f, std::move(req));
    REQUIRE(res);
    return *res;
  };
  REQUIRE(via(a, signed_req("POST", "/2015-03-31/functions", create_body("f1"))).status == 201);
  // b caches the function; a change made through a reaches b's cache.
  REQUIRE(via(b, signed_req("GET", "/2015-03-31/functions/f1/configuration")).status == 200);
  auto updated = via(a, signed_req("PUT", "/2015-03-31/functions/f1/configuration",
                                   R"({"Timeout":77})"));
  REQUIRE(updated.status == 200);
  auto seen = via(b, signed_req("GET", "/2015-03-31/functions/f1/configuration"));
  CHECK(seen.body.find("\"Timeout\":77") != std::string::npos);
  // A code link made by a is good at b.
  auto got = via(a, signed_req("GET", "/2015-03-31/functions/f1"));
  REQUIRE(got.status == 200);
  simdjson::dom::parser parser;
  std::string_view location;
  REQUIRE_FALSE(parser.parse(got.body)["Code"]["Location"].get_string().get(location));
  auto path = std::string{location.substr(location.find('/', location.find("//") + 2))};
  auto download = via(b, make("GET", path));
  CHECK(download.status == 200);
  CHECK(download.body == zip);
  // The cache is shared: what b read, a finds.
  CHECK(fc.cache->size() == 1);
  REQUIRE(via(a, signed_req("GET", "/2015-03-31/functions/f1/configuration")).status == 200);
  // Lookups through both count (misses: b twice, as the change emptied the
  // cache; a hit: a's GetFunction and GetFunctionConfiguration), wherever
  // /metrics is asked.
  auto text = via(b, make("GET", "/metrics")).body;
  CHECK(shared->cache_misses == 2);
  CHECK(shared->cache_hits == 2);
  CHECK(text.find("nimbus_frontend_metadata_cache_total{result=\"hit\"} "
                  + std::to_string(shared->cache_hits.load()))
        != std::string::npos);
  stop(a);
  stop(b);
}

TEST_CASE("frontend: invoke metrics add up across threads") {
  invoke_metrics m;
  auto work = [&] {
    for (int i = 0; i < 10'000; ++i) {
      ++m.concurrent;
      ++m.invocations;
      m.observe_invoke(1'000);
      if (i % 10 == 0) {
        ++m.cold_starts;
        m.observe_init(50'000);
      }
      --m.concurrent;
    }
  };
  std::thread t1{work};
  std::thread t2{work};
  t1.join();
  t2.join();
  auto text = m.render();
  CHECK(text.find("nimbus_invocations_total 20000\n") != std::string::npos);
  CHECK(text.find("nimbus_cold_starts_total 2000\n") != std::string::npos);
  CHECK(text.find("nimbus_concurrent_executions 0\n") != std::string::npos);
  CHECK(text.find("nimbus_invoke_duration_seconds_count 20000\n") != std::string::npos);
  CHECK(text.find("nimbus_init_duration_seconds_count 2000\n") != std::string::npos);
}

TEST_CASE("frontend: the shared metadata cache drops an answer that raced a change") {
  metadata_cache cache{2};
  storage::function_record r;
  r.account_id = "1";
  r.name = "f";
  r.revision_id = "rev-1";
  metadata_cache::key_type f{"1", "f"};
  CHECK_FALSE(cache.find(f));
  auto ticket = cache.ticket();
  cache.insert(f, r, ticket);
  auto hit = cache.find(f);
  REQUIRE(hit);
  CHECK(hit->revision_id == "rev-1");
  // A lookup starts, a change notice arrives, then the (old) answer: it is
  // not cached, and the next lookup asks the registry again.
  ticket = cache.ticket();
  cache.erase(f);
  cache.insert(f, r, ticket);
  CHECK_FALSE(cache.find(f));
  // The capacity bounds the entries.
  ticket = cache.ticket();
  for (auto name : {"a", "b", "c"}) {
    r.name = name;
    cache.insert({"1", name}, r, ticket);
  }
  CHECK(cache.size() == 2);
  CHECK(cache.find({"1", "c"}));
}
