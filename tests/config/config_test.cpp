#include "nimbus/config/config.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace nimbus::config;

namespace {

bool has_error(const load_result& r, const std::string& key, const std::string& fragment) {
  for (const auto& e : r.errors)
    if (e.key == key && e.message.find(fragment) != std::string::npos)
      return true;
  return false;
}

constexpr const char* account_block = R"(
[[accounts]]
id = "111122223333"
access_key_id = "AKIATESTTESTTEST0001"
secret_access_key = "0123456789abcdef0123"
)";

} // namespace

TEST_CASE("config: the embedded single-node default loads") {
  auto r = parse(default_config_text(), "single-node.toml");
  REQUIRE_MESSAGE(r.ok(), (r.errors.empty() ? "" : r.errors.front().to_string()));
  CHECK(r.config.api.listen_address == "127.0.0.1");
  CHECK(r.config.api.listen_port == 9000);
  CHECK(r.config.region == "us-east-1");
  CHECK(r.config.node_name == "nimbus-1");
  REQUIRE(r.config.accounts.size() == 1);
  CHECK(r.config.accounts[0].id == "123456789012");
  CHECK(r.config.limits.control_body_bytes == 70167211);
  CHECK(r.config.api.clock_skew == std::chrono::seconds{300});
}

TEST_CASE("config: the shipped file equals the embedded default") {
  auto r = load_file(std::string{NIMBUS_SOURCE_DIR} + "/config/single-node.toml");
  REQUIRE(r.ok());
  auto e = parse(default_config_text(), "embedded");
  CHECK(r.config.accounts[0].secret_access_key == e.config.accounts[0].secret_access_key);
  CHECK(r.config.data_dir == e.config.data_dir);
}

TEST_CASE("config: values override defaults") {
  auto r = parse(std::string{R"(
[node]
name = "n7"
data_dir = "/tmp/x"
region = "eu-west-1"
[api]
listen = "0.0.0.0:1234"
clock_skew_seconds = 60
[log]
level = "debug"
)"} + account_block,
                 "t.toml");
  REQUIRE(r.ok());
  CHECK(r.config.node_name == "n7");
  CHECK(r.config.data_dir == "/tmp/x");
  CHECK(r.config.region == "eu-west-1");
  CHECK(r.config.api.listen_address == "0.0.0.0");
  CHECK(r.config.api.listen_port == 1234);
  CHECK(r.config.api.clock_skew == std::chrono::seconds{60});
  CHECK(r.config.log.level == "debug");
}

TEST_CASE("config: unknown keys are errors naming the key") {
  auto r = parse(std::string{"[api]\nlisten = \"127.0.0.1:9000\"\nlisen = 3\n[nodes]\nx=1\n"}
                   + account_block,
                 "t.toml");
  CHECK_FALSE(r.ok());
  CHECK(has_error(r, "api.lisen", "unknown key"));
  CHECK(has_error(r, "nodes", "unknown key"));
}

TEST_CASE("config: type and range errors name the key") {
  auto r = parse(std::string{"[api]\nlisten = 9000\nio_threads = 257\nmax_pipeline = \"x\"\n"}
                   + account_block,
                 "t.toml");
  CHECK(has_error(r, "api.listen", "expected a string"));
  CHECK(has_error(r, "api.io_threads", "between 0 and 256"));
  CHECK(has_error(r, "api.max_pipeline", "expected an integer"));
}

TEST_CASE("config: bad listen address") {
  for (auto bad : {"nohost", "127.0.0.1:99999", "127.0.0.1:", ":80", "h:12ab"}) {
    auto r = parse(std::string{"[api]\nlisten = \""} + bad + "\"\n" + account_block, "t.toml");
    CHECK_MESSAGE(has_error(r, "api.listen", ""), bad);
  }
}

TEST_CASE("config: accounts are validated") {
  auto r = parse(R"(
[[accounts]]
id = "12345"
access_key_id = "short"
secret_access_key = "s"
)",
                 "t.toml");
  CHECK(has_error(r, "accounts[0].id", "12-digit"));
  CHECK(has_error(r, "accounts[0].access_key_id", "16 to 128"));
  CHECK(has_error(r, "accounts[0].secret_access_key", "at least 16"));
  auto none = parse("[node]\nname = \"x\"\n", "t.toml");
  CHECK(has_error(none, "accounts", "at least one"));
  auto dup = parse(std::string{account_block} + account_block, "t.toml");
  CHECK(has_error(dup, "accounts[1].id", "duplicate"));
}

TEST_CASE("config: syntax errors carry file, line and column") {
  auto r = parse("[api\nlisten = 1\n", "broken.toml");
  REQUIRE_FALSE(r.ok());
  CHECK(r.errors.front().key.empty());
  CHECK(r.errors.front().message.find("broken.toml:1:") == 0);
}

TEST_CASE("config: a missing file is an error") {
  auto r = load_file("/nonexistent/nimbus.toml");
  REQUIRE_FALSE(r.ok());
  CHECK(r.errors.front().message.find("/nonexistent/nimbus.toml") != std::string::npos);
}

TEST_CASE("config: the [code] section is read and checked") {
  auto defaults = parse(default_config_text(), "single-node.toml");
  REQUIRE(defaults.ok());
  CHECK(defaults.config.code.convergence_domain == "account");
  CHECK(defaults.config.code.lazy);
  CHECK(defaults.config.code.image_bytes == (10ull << 30));
  auto r = parse(std::string{R"(
[code]
convergence_domain = "global"
master_key_file = "/etc/nimbus/master.key"
cache_memory_bytes = 2097152
cache_disk_bytes = 0
lazy = false
)"} + account_block,
                 "t.toml");
  REQUIRE(r.ok());
  CHECK(r.config.code.convergence_domain == "global");
  CHECK(r.config.code.master_key_file == "/etc/nimbus/master.key");
  CHECK(r.config.code.cache_memory_bytes == 2097152);
  CHECK(r.config.code.cache_disk_bytes == 0);
  CHECK_FALSE(r.config.code.lazy);
  auto bad = parse(std::string{"[code]\nconvergence_domain = \"tenant\"\ncache_memory_bytes = 5\n"}
                     + account_block,
                   "t.toml");
  CHECK(has_error(bad, "code.convergence_domain", "account"));
  CHECK(has_error(bad, "code.cache_memory_bytes", "between"));
}

TEST_CASE("config: the worker's Runtime API io threads are read and bounded") {
  auto r = parse(std::string{"[worker]\nruntime_io_threads = 2\n"} + account_block, "t.toml");
  REQUIRE(r.ok());
  CHECK(r.config.worker.runtime_io_threads == 2);
  auto defaults = parse(account_block, "t.toml");
  REQUIRE(defaults.ok());
  // 0 (the default): the Runtime API shares the Lambda API's io threads.
  CHECK(defaults.config.worker.runtime_io_threads == 0);
  auto shared = parse(std::string{"[worker]\nruntime_io_threads = 0\n"} + account_block, "t.toml");
  REQUIRE(shared.ok());
  CHECK(shared.config.worker.runtime_io_threads == 0);
  auto bad = parse(std::string{"[worker]\nruntime_io_threads = 65\n"} + account_block, "t.toml");
  CHECK(has_error(bad, "worker.runtime_io_threads", "between 0 and 64"));
}

TEST_CASE("config: io thread pinning and the pinned function size are read and bounded") {
  auto defaults = parse(account_block, "t.toml");
  REQUIRE(defaults.ok());
  CHECK(defaults.config.api.pin_io_threads);
  CHECK(defaults.config.api.io_threads_nice == -5);
  CHECK(defaults.config.api.io_threads == 0); // one per CPU
  CHECK(defaults.config.worker.pin_below_mb == 1769);
  auto r = parse(std::string{"[api]\npin_io_threads = false\n[worker]\npin_below_mb = 0\n"}
                   + account_block,
                 "t.toml");
  REQUIRE(r.ok());
  CHECK_FALSE(r.config.api.pin_io_threads);
  CHECK(r.config.worker.pin_below_mb == 0);
  auto bad = parse(std::string{"[api]\npin_io_threads = 1\n[worker]\npin_below_mb = -1\n"}
                     + account_block,
                   "t.toml");
  CHECK(has_error(bad, "api.pin_io_threads", ""));
  CHECK(has_error(bad, "worker.pin_below_mb", "between 0 and"));
}

TEST_CASE("config: code images linger 300 s by default, 0 to a day") {
  auto defaults = parse(account_block, "t.toml");
  REQUIRE(defaults.ok());
  CHECK(defaults.config.code.mount_linger == std::chrono::seconds{300});
  auto off = parse(std::string{"[code]\nmount_linger_seconds = 0\n"} + account_block, "t.toml");
  REQUIRE(off.ok());
  CHECK(off.config.code.mount_linger == std::chrono::seconds{0});
  auto bad = parse(std::string{"[code]\nmount_linger_seconds = 86401\n"} + account_block, "t.toml");
  CHECK(has_error(bad, "code.mount_linger_seconds", "between 0 and 86400"));
}

TEST_CASE("config: the io threads' nice value is read and bounded") {
  auto r = parse(std::string{"[api]\nio_threads_nice = 0\n"} + account_block, "t.toml");
  REQUIRE(r.ok());
  CHECK(r.config.api.io_threads_nice == 0);
  auto low = parse(std::string{"[api]\nio_threads_nice = -20\n"} + account_block, "t.toml");
  REQUIRE(low.ok());
  CHECK(low.config.api.io_threads_nice == -20);
  for (auto v : {"-21", "20", "\"high\""}) {
    auto bad = parse(std::string{"[api]\nio_threads_nice = "} + v + "\n" + account_block, "t.toml");
    CHECK(has_error(bad, "api.io_threads_nice", ""));
  }
}
