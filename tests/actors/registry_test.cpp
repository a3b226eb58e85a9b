#include "nimbus/actors/error.hpp"
#include "nimbus/actors/registry.hpp"
#include "nimbus/storage/digest.hpp"

#include "../support/memory_function_store.hpp"
#include "../support/zip_builder.hpp"
#include "fixture.hpp"

#include <caf/typed_event_based_actor.hpp>

#include <doctest/doctest.h>

using namespace nimbus;
using storage::function_record;
using transport::lambda::code_update;
using transport::lambda::configuration_patch;
using transport::lambda::event_invoke_update;
using transport::lambda::function_spec;

namespace {

constexpr const char* account_a = "111111111111";
constexpr const char* account_b = "222222222222";

struct registry_fixture : test::actor_fixture {
  std::shared_ptr<test::memory_function_store> store
    = std::make_shared<test::memory_function_store>();
  registry_actor registry;
  std::string zip1 = test::make_zip({{"app.py", "def handler(e, c): return 1\n"}});
  std::string zip2 = test::make_zip({{"app.py", "def handler(e, c): return 2\n"}});

  registry_fixture() {
    start({});
  }

  ~registry_fixture() {
    stop(registry);
  }

  void start(std::vector<function_record> loaded) {
    registry_config cfg;
    cfg.region = "eu-west-1";
    cfg.code_size_unzipped = 1 << 20;
    cfg.total_code_size = 1 << 20;
    cfg.now_ms = [] { return int64_t{1'700'000'000'000}; };
    REQUIRE(validate(cfg).empty());
    registry = spawn_registry(sys, cfg, store, std::move(loaded));
    sched.run();
  }

  function_spec spec(std::string name, const std::string& zip) {
    function_spec s;
    s.name = std::move(name);
    s.runtime = "python3.11";
    s.role = "arn:aws:iam::111111111111:role/r";
    s.handler = "app.handler";
    s.zip = zip;
    return s;
  }

  caf::expected<function_record> create(const std::string& account, function_spec s) {
    return request<function_record>(registry, create_atom::value, account, std::move(s));
  }

  caf::expected<function_record> get(const std::string& account, const std::string& name) {
    return request<function_record>(registry, get_atom::value, account, name);
  }
};

std::string hex_of(const std::string& zip) {
  return storage::to_hex(storage::sha256(zip));
}

/// What a metadata listener heard: (account, name, revision) per invalidate.
using invalidations = std::vector<std::vector<std::string>>;

metadata_listener_actor::behavior_type recording_listener(std::shared_ptr<invalidations> heard) {
  return {
    [=](invalidate_atom, const std::string& account, const std::string& name,
        const std::string& revision) { heard->push_back({account, name, revision}); },
  };
}

const std::string queue_a = "arn:aws:sqs:eu-west-1:111111111111:q1";

} // namespace

TEST_CASE_FIXTURE(registry_fixture, "registry: create then get returns the stored record") {
  auto created = create(account_a, spec("f1", zip1));
  REQUIRE(created);
  CHECK(created->account_id == account_a);
  CHECK(created->code_size == static_cast<int64_t>(zip1.size()));
  CHECK(created->code_sha256 == storage::base64_encode(storage::as_bytes(storage::sha256(zip1))));
  CHECK(created->last_modified == "2023-11-14T22:13:20.000+0000");
  CHECK(created->revision_id.size() == 36);
  CHECK(store->code.count(hex_of(zip1)) == 1);
  CHECK(store->records.count(std::string{account_a} + "/f1") == 1);
  auto got = get(account_a, "f1");
  REQUIRE(got);
  CHECK(got->revision_id == created->revision_id);
}

TEST_CASE_FIXTURE(registry_fixture, "registry: duplicates, unknown runtimes and bad zips fail") {
  REQUIRE(create(account_a, spec("f1", zip1)));
  auto dup = create(account_a, spec("f1", zip2));
  REQUIRE_FALSE(dup);
  CHECK(dup.error() == ec::resource_conflict);
  CHECK(error_message(dup.error()) == "Function already exist: f1");
  auto s = spec("f2", zip1);
  s.runtime = "cobol85";
  auto bad_runtime = create(account_a, s);
  REQUIRE_FALSE(bad_runtime);
  CHECK(bad_runtime.error() == ec::invalid_parameter);
  CHECK(error_message(bad_runtime.error()).find("cobol85") != std::string::npos);
  auto bad_zip = create(account_a, spec("f3", "not a zip, but long enough to look like one"));
  REQUIRE_FALSE(bad_zip);
  CHECK(bad_zip.error() == ec::invalid_parameter);
  auto slip = create(account_a, spec("f4", test::make_zip({{"../../x", "y"}})));
  REQUIRE_FALSE(slip);
  CHECK(error_message(slip.error()).find("'..'") != std::string::npos);
  CHECK(store->code.size() == 1);
  CHECK(store->records.size() == 1);
}

TEST_CASE_FIXTURE(registry_fixture, "registry: a failed write leaves nothing behind") {
  store->fail_put_function = true;
  auto r = create(account_a, spec("f1", zip1));
  REQUIRE_FALSE(r);
  CHECK(r.error() == ec::storage_failure);
  CHECK(store->code.empty());
  CHECK(store->records.empty());
  CHECK(get(account_a, "f1").error() == ec::resource_not_found);
  store->fail_put_function = false;
  REQUIRE(create(account_a, spec("f1", zip1)));
  store->fail_put_function = true;
  auto upd = request<function_record>(registry, update_code_atom::value, std::string{account_a},
                                      std::string{"f1"}, code_update{zip2, std::nullopt, false});
  REQUIRE_FALSE(upd);
  CHECK(store->code.count(hex_of(zip2)) == 0);
  CHECK(store->code.count(hex_of(zip1)) == 1);
  CHECK(get(account_a, "f1")->code_sha256_hex == hex_of(zip1));
  store->fail_put_function = false;
  store->fail_remove_function = true;
  auto del = request<bool>(registry, delete_atom::value, std::string{account_a}, std::string{"f1"});
  REQUIRE_FALSE(del);
  CHECK(get(account_a, "f1"));
}

TEST_CASE_FIXTURE(registry_fixture, "registry: accounts never see each other's functions") {
  REQUIRE(create(account_a, spec("f1", zip1)));
  auto other = get(account_b, "f1");
  REQUIRE_FALSE(other);
  CHECK(other.error() == ec::resource_not_found);
  CHECK(error_message(other.error())
        == "Function not found: arn:aws:lambda:eu-west-1:222222222222:function:f1");
  REQUIRE(create(account_b, spec("f1", zip2)));
  CHECK(get(account_a, "f1")->code_sha256_hex == hex_of(zip1));
  CHECK(get(account_b, "f1")->code_sha256_hex == hex_of(zip2));
  auto page = request<function_page>(registry, list_atom::value, std::string{account_b},
                                     std::string{}, int32_t{50});
  REQUIRE(page);
  REQUIRE(page->functions.size() == 1);
  CHECK(page->functions[0].account_id == account_b);
  CHECK_FALSE(request<bool>(registry, delete_atom::value, std::string{account_b},
                            std::string{"nope"}));
}

TEST_CASE_FIXTURE(registry_fixture, "registry: code shared by two functions outlives one delete") {
  REQUIRE(create(account_a, spec("f1", zip1)));
  REQUIRE(create(account_a, spec("f2", zip1)));
  CHECK(store->code.size() == 1);
  REQUIRE(request<bool>(registry, delete_atom::value, std::string{account_a}, std::string{"f1"}));
  CHECK(store->code.count(hex_of(zip1)) == 1);
  auto code = request<std::string>(registry, fetch_code_atom::value, std::string{account_a},
                                   std::string{"f2"}, hex_of(zip1));
  REQUIRE(code);
  CHECK(*code == zip1);
  REQUIRE(request<bool>(registry, delete_atom::value, std::string{account_a}, std::string{"f2"}));
  CHECK(store->code.empty());
  CHECK(store->records.empty());
}

TEST_CASE_FIXTURE(registry_fixture, "registry: updates check the revision and replace code") {
  auto created = create(account_a, spec("f1", zip1));
  REQUIRE(created);
  auto stale = request<function_record>(registry, update_code_atom::value, std::string{account_a},
                                        std::string{"f1"},
                                        code_update{zip2, std::string{"other"}, false});
  REQUIRE_FALSE(stale);
  CHECK(stale.error() == ec::precondition_failed);
  auto dry = request<function_record>(registry, update_code_atom::value, std::string{account_a},
                                      std::string{"f1"}, code_update{zip2, std::nullopt, true});
  REQUIRE(dry);
  CHECK(store->code.count(hex_of(zip2)) == 0);
  auto updated = request<function_record>(registry, update_code_atom::value,
                                          std::string{account_a}, std::string{"f1"},
                                          code_update{zip2, created->revision_id, false});
  REQUIRE(updated);
  CHECK(updated->revision_id != created->revision_id);
  CHECK(store->code.count(hex_of(zip2)) == 1);
  CHECK(store->code.count(hex_of(zip1)) == 0);
  configuration_patch patch;
  patch.timeout = 42;
  patch.environment = std::map<std::string, std::string>{{"K", "V"}};
  patch.revision_id = updated->revision_id;
  auto configured = request<function_record>(registry, update_config_atom::value,
                                             std::string{account_a}, std::string{"f1"}, patch);
  REQUIRE(configured);
  CHECK(configured->timeout == 42);
  CHECK(configured->has_environment);
  CHECK(configured->environment.at("K") == "V");
  CHECK(configured->code_sha256_hex == hex_of(zip2));
  CHECK(store->records.at(std::string{account_a} + "/f1").timeout == 42);
  patch.runtime = "fortran";
  patch.revision_id.reset();
  auto bad = request<function_record>(registry, update_config_atom::value,
                                      std::string{account_a}, std::string{"f1"}, patch);
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == ec::invalid_parameter);
}

TEST_CASE_FIXTURE(registry_fixture, "registry: list pages by name after the marker") {
  for (auto name : {"c", "a", "e", "b", "d"})
    REQUIRE(create(account_a, spec(name, zip1)));
  std::vector<std::string> seen;
  std::string marker;
  int pages = 0;
  do {
    auto page = request<function_page>(registry, list_atom::value, std::string{account_a},
                                       marker, int32_t{2});
    REQUIRE(page);
    for (auto& f : page->functions)
      seen.push_back(f.name);
    marker = page->next_marker;
    ++pages;
  } while (!marker.empty() && pages < 10);
  CHECK(seen == std::vector<std::string>{"a", "b", "c", "d", "e"});
  CHECK(pages == 3);
  auto usage = request<account_usage>(registry, usage_atom::value, std::string{account_a});
  REQUIRE(usage);
  CHECK(usage->function_count == 5);
  CHECK(usage->total_code_size == 5 * zip1.size());
}

TEST_CASE_FIXTURE(registry_fixture, "registry: the account code quota is enforced") {
  auto big = test::make_zip({{"blob", storage::random_bytes(600'000)}});
  REQUIRE(create(account_a, spec("f1", big)));
  auto second = create(account_a, spec("f2", big));
  REQUIRE_FALSE(second);
  CHECK(second.error() == ec::code_storage_exceeded);
}

TEST_CASE_FIXTURE(registry_fixture, "registry: records loaded at startup are served") {
  REQUIRE(create(account_a, spec("f1", zip1)));
  stop(registry);
  std::vector<function_record> loaded;
  REQUIRE(store->load(loaded).ok());
  start(loaded);
  auto got = get(account_a, "f1");
  REQUIRE(got);
  CHECK(got->code_sha256_hex == hex_of(zip1));
  // The loaded code is referenced: deleting one of two users keeps it.
  REQUIRE(create(account_a, spec("f2", zip1)));
  REQUIRE(request<bool>(registry, delete_atom::value, std::string{account_a}, std::string{"f2"}));
  CHECK(store->code.count(hex_of(zip1)) == 1);
}

namespace {

struct event_invoke_fixture : registry_fixture {
  caf::expected<function_record> put(event_invoke_update u, const std::string& name = "f1") {
    u.replace = true;
    return request<function_record>(registry, event_config_atom::value, std::string{account_a},
                                    name, std::move(u));
  }

  caf::expected<function_record> update(event_invoke_update u, const std::string& name = "f1") {
    u.replace = false;
    return request<function_record>(registry, event_config_atom::value, std::string{account_a},
                                    name, std::move(u));
  }

  caf::expected<function_record> remove(const std::string& name = "f1") {
    return request<function_record>(registry, event_config_atom::value, delete_atom::value,
                                    std::string{account_a}, name);
  }
};

} // namespace

TEST_CASE_FIXTURE(event_invoke_fixture, "registry: put replaces, update merges, delete removes the event invoke config") {
  auto created = create(account_a, spec("f1", zip1));
  REQUIRE(created);
  REQUIRE(create(account_a, spec("f2", zip1)));
  auto heard = std::make_shared<invalidations>();
  auto listener = sys.spawn(recording_listener, heard);
  self->send(registry, subscribe_atom::value, listener);
  sched.run();

  // Update needs a config to merge into, as on AWS.
  auto early = update(event_invoke_update{false, 1, {}, {}, {}});
  REQUIRE_FALSE(early);
  CHECK(early.error() == ec::resource_not_found);
  CHECK(error_message(early.error())
        == "The function arn:aws:lambda:eu-west-1:111111111111:function:f1:$LATEST doesn't "
           "have an EventInvokeConfig");

  auto put1 = put(event_invoke_update{true, 1, {}, {}, queue_a});
  REQUIRE(put1);
  REQUIRE(put1->event_invoke);
  CHECK(put1->event_invoke->maximum_retry_attempts == 1);
  CHECK(put1->event_invoke->maximum_event_age_seconds == -1);
  CHECK(put1->event_invoke->on_success.empty());
  CHECK(put1->event_invoke->on_failure == queue_a);
  CHECK(put1->event_invoke->last_modified_ms == 1'700'000'000'000);
  // Not a new revision: warm environments stay, RevisionId checks still pass.
  CHECK(put1->revision_id == created->revision_id);
  CHECK(put1->last_modified == created->last_modified);
  REQUIRE(store->records.at(std::string{account_a} + "/f1").event_invoke);
  // The change is announced with the unchanged revision.
  REQUIRE(heard->size() == 1);
  CHECK(heard->back() == std::vector<std::string>{account_a, "f1", created->revision_id});

  const std::string f2_arn = "arn:aws:lambda:eu-west-1:111111111111:function:f2";
  auto merged = update(event_invoke_update{false, {}, 120, f2_arn, {}});
  REQUIRE(merged);
  CHECK(merged->event_invoke->maximum_retry_attempts == 1);
  CHECK(merged->event_invoke->maximum_event_age_seconds == 120);
  CHECK(merged->event_invoke->on_success == f2_arn);
  CHECK(merged->event_invoke->on_failure == queue_a);
  // An OnFailure without Destination removes only that destination.
  auto cleared = update(event_invoke_update{false, {}, {}, {}, std::string{}});
  REQUIRE(cleared);
  CHECK(cleared->event_invoke->on_failure.empty());
  CHECK(cleared->event_invoke->on_success == f2_arn);
  CHECK(cleared->event_invoke->maximum_event_age_seconds == 120);

  // Put again: everything it does not name is gone.
  auto put2 = put(event_invoke_update{true, {}, 60, {}, {}});
  REQUIRE(put2);
  CHECK(put2->event_invoke->maximum_retry_attempts == -1);
  CHECK(put2->event_invoke->maximum_event_age_seconds == 60);
  CHECK(put2->event_invoke->on_success.empty());
  CHECK(get(account_a, "f1")->event_invoke->maximum_event_age_seconds == 60);

  auto removed = remove();
  REQUIRE(removed);
  CHECK_FALSE(removed->event_invoke);
  CHECK_FALSE(get(account_a, "f1")->event_invoke);
  CHECK_FALSE(store->records.at(std::string{account_a} + "/f1").event_invoke);
  CHECK(heard->size() == 5);
  auto again = remove();
  REQUIRE_FALSE(again);
  CHECK(again.error() == ec::resource_not_found);
  CHECK(error_message(again.error()).find("doesn't have an EventInvokeConfig") != std::string::npos);
  // The other function was never touched.
  CHECK_FALSE(get(account_a, "f2")->event_invoke);
  stop(listener);
}

TEST_CASE_FIXTURE(event_invoke_fixture, "registry: event invoke destinations must be the caller's and exist") {
  REQUIRE(create(account_a, spec("f1", zip1)));
  REQUIRE(create(account_b, spec("g", zip1)));
  struct row {
    std::string arn;
    std::string message;
  };
  for (const auto& r : std::vector<row>{
         {"arn:aws:lambda:eu-west-1:111111111111:function:f1",
          "You can't specify the function as a destination for itself."},
         {"arn:aws:lambda:eu-west-1:111111111111:function:f1:$LATEST",
          "You can't specify the function as a destination for itself."},
         {"arn:aws:lambda:eu-west-1:111111111111:function:nope",
          "The destination ARN arn:aws:lambda:eu-west-1:111111111111:function:nope is invalid."},
         // B's function exists, but not for A.
         {"arn:aws:lambda:eu-west-1:222222222222:function:g",
          "The destination ARN arn:aws:lambda:eu-west-1:222222222222:function:g is invalid: it "
          "must be in the function's own account (111111111111) and region (eu-west-1)."},
         {"arn:aws:sqs:eu-west-1:222222222222:q1", "own account"},
         {"arn:aws:sqs:us-east-1:111111111111:q1", "own account"},
       }) {
    auto p = put(event_invoke_update{true, {}, {}, r.arn, {}});
    REQUIRE_FALSE_MESSAGE(p, r.arn);
    CHECK(p.error() == ec::invalid_parameter);
    CHECK_MESSAGE(error_message(p.error()).find(r.message) != std::string::npos,
                  error_message(p.error()));
  }
  CHECK_FALSE(store->records.at(std::string{account_a} + "/f1").event_invoke);
  auto missing = put(event_invoke_update{true, 1, {}, {}, {}}, "nope");
  REQUIRE_FALSE(missing);
  CHECK(missing.error() == ec::resource_not_found);
  CHECK(error_message(missing.error()) == "The function doesn't exist.");
  // Another account's function of the same name is not reachable either.
  REQUIRE_FALSE(put(event_invoke_update{true, 1, {}, {}, {}}, "g"));
}

TEST_CASE_FIXTURE(event_invoke_fixture, "registry: dead-letter targets on create and update configuration") {
  auto s = spec("f1", zip1);
  s.dead_letter_target = "arn:aws:sqs:eu-west-1:222222222222:dlq";
  auto foreign = create(account_a, s);
  REQUIRE_FALSE(foreign);
  CHECK(foreign.error() == ec::invalid_parameter);
  CHECK(error_message(foreign.error()).find("own account (111111111111)") != std::string::npos);
  CHECK(store->records.empty());
  s.dead_letter_target = queue_a;
  auto created = create(account_a, s);
  REQUIRE(created);
  CHECK(created->dead_letter_target == queue_a);

  configuration_patch patch;
  patch.dead_letter_target = "arn:aws:sqs:eu-west-1:111111111111:other-dlq";
  auto changed = request<function_record>(registry, update_config_atom::value,
                                          std::string{account_a}, std::string{"f1"}, patch);
  REQUIRE(changed);
  CHECK(changed->dead_letter_target == "arn:aws:sqs:eu-west-1:111111111111:other-dlq");
  // A configuration update like any other: a new revision.
  CHECK(changed->revision_id != created->revision_id);
  patch.dead_letter_target = std::string{};
  auto cleared = request<function_record>(registry, update_config_atom::value,
                                          std::string{account_a}, std::string{"f1"}, patch);
  REQUIRE(cleared);
  CHECK(cleared->dead_letter_target.empty());
  configuration_patch unrelated;
  unrelated.timeout = 9;
  patch.dead_letter_target = queue_a;
  REQUIRE(request<function_record>(registry, update_config_atom::value, std::string{account_a},
                                   std::string{"f1"}, patch));
  auto kept = request<function_record>(registry, update_config_atom::value,
                                       std::string{account_a}, std::string{"f1"}, unrelated);
  REQUIRE(kept);
  CHECK(kept->dead_letter_target == queue_a);
  patch.dead_letter_target = "arn:aws:sqs:us-east-1:111111111111:dlq";
  auto other_region = request<function_record>(registry, update_config_atom::value,
                                                std::string{account_a}, std::string{"f1"}, patch);
  REQUIRE_FALSE(other_region);
  CHECK(other_region.error() == ec::invalid_parameter);
  CHECK(get(account_a, "f1")->dead_letter_target == queue_a);
}

TEST_CASE_FIXTURE(event_invoke_fixture, "registry: event invoke config and dead-letter target survive a restart") {
  auto s = spec("f1", zip1);
  s.dead_letter_target = queue_a;
  REQUIRE(create(account_a, s));
  REQUIRE(put(event_invoke_update{true, 0, 3600, {}, queue_a}));
  stop(registry);
  std::vector<function_record> loaded;
  REQUIRE(store->load(loaded).ok());
  // Through the stored JSON, as the file store does it.
  for (auto& r : loaded) {
    std::string error;
    auto back = storage::function_record_from_json(storage::to_json(r), error);
    REQUIRE_MESSAGE(back, error);
    r = *back;
  }
  start(loaded);
  auto got = get(account_a, "f1");
  REQUIRE(got);
  CHECK(got->dead_letter_target == queue_a);
  REQUIRE(got->event_invoke);
  CHECK(got->event_invoke->maximum_retry_attempts == 0);
  CHECK(got->event_invoke->maximum_event_age_seconds == 3600);
  CHECK(got->event_invoke->on_failure == queue_a);
  CHECK(got->event_invoke->last_modified_ms == 1'700'000'000'000);
  // Update after the restart merges into the loaded config.
  auto merged = update(event_invoke_update{false, 2, {}, {}, {}});
  REQUIRE(merged);
  CHECK(merged->event_invoke->maximum_retry_attempts == 2);
  CHECK(merged->event_invoke->maximum_event_age_seconds == 3600);
}
