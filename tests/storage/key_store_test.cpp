#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/durable_file.hpp"
#include "nimbus/storage/key_store.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

using namespace nimbus::storage;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/nimbus-keys-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    fs::remove_all(path);
  }
};

std::string bytes_of(const std::array<uint8_t, 32>& key) {
  return {reinterpret_cast<const char*>(key.data()), key.size()};
}

std::string master_of(const std::string& dir) {
  std::string master;
  REQUIRE(read_file(dir + "/master.key", master).ok());
  return master;
}

// An error text must carry neither the raw nor the hex form of a secret.
void check_no_secret(const std::string& error, const std::string& secret) {
  CHECK(error.find(secret) == std::string::npos);
  CHECK(error.find(to_hex(secret)) == std::string::npos);
}

void write_master(const std::string& path, const std::string& bytes, mode_t mode) {
  REQUIRE(write_file_atomic(path, bytes).ok());
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

} // namespace

TEST_CASE("key store: a new store creates its master key and keeps keys across a reopen") {
  temp_dir dir;
  std::string error;
  std::array<uint8_t, 32> data_a{}, data_b{};
  convergence_secret conv_a{}, conv_b{}, global_a{}, global_b{};
  {
    auto keys = key_store::open(dir.path, "", error);
    REQUIRE_MESSAGE(keys, error);
    struct stat st {};
    REQUIRE(::stat((dir.path + "/master.key").c_str(), &st) == 0);
    CHECK(st.st_size == 32);
    CHECK((st.st_mode & 0777) == 0600);
    REQUIRE(keys->data_key("111111111111", data_a).empty());
    REQUIRE(keys->data_key("222222222222", data_b).empty());
    REQUIRE(keys->convergence("111111111111", convergence_domain::account, conv_a).empty());
    REQUIRE(keys->convergence("222222222222", convergence_domain::account, conv_b).empty());
    REQUIRE(keys->convergence("111111111111", convergence_domain::global, global_a).empty());
    REQUIRE(keys->convergence("222222222222", convergence_domain::global, global_b).empty());
    CHECK(data_a != data_b);
    CHECK(conv_a != conv_b);
    CHECK(conv_a != data_a);
    CHECK(global_a == global_b);
    CHECK(global_a != conv_a);
    // Cached: the same key again.
    std::array<uint8_t, 32> again{};
    REQUIRE(keys->data_key("111111111111", again).empty());
    CHECK(again == data_a);
  }
  // Wrapped on disk: the file holds no key in clear.
  std::string wrapped;
  REQUIRE(read_file(dir.path + "/accounts/111111111111.key", wrapped).ok());
  CHECK(wrapped.size() == 4 + 12 + 32 + 16);
  CHECK(wrapped.find(bytes_of(data_a)) == std::string::npos);

  auto keys = key_store::open(dir.path, "", error);
  REQUIRE_MESSAGE(keys, error);
  std::array<uint8_t, 32> data{};
  convergence_secret conv{}, global{};
  REQUIRE(keys->data_key("111111111111", data).empty());
  REQUIRE(keys->convergence("222222222222", convergence_domain::account, conv).empty());
  REQUIRE(keys->convergence("333333333333", convergence_domain::global, global).empty());
  CHECK(data == data_a);
  CHECK(conv == conv_b);
  CHECK(global == global_a);
}

TEST_CASE("key store: a wrong master key fails at open without revealing key bytes") {
  temp_dir dir;
  std::string error;
  {
    auto keys = key_store::open(dir.path, "", error);
    REQUIRE_MESSAGE(keys, error);
    std::array<uint8_t, 32> key{};
    REQUIRE(keys->data_key("111111111111", key).empty());
  }
  auto right = master_of(dir.path);
  auto other_path = dir.path + "/other.key";
  auto wrong = random_bytes(32);
  write_master(other_path, wrong, 0600);
  auto keys = key_store::open(dir.path, other_path, error);
  CHECK(!keys);
  CHECK(error.find("does not match") != std::string::npos);
  check_no_secret(error, right);
  check_no_secret(error, wrong);
  // The right key given explicitly opens it.
  auto copy_path = dir.path + "/copy.key";
  write_master(copy_path, right, 0400);
  CHECK_MESSAGE(key_store::open(dir.path, copy_path, error), error);
}

TEST_CASE("key store: master key files with bad permissions, size or presence are refused") {
  temp_dir dir;
  std::string error;
  auto path = dir.path + "/m.key";
  auto master = random_bytes(32);
  for (mode_t mode : {0640, 0604, 0620, 0660, 0644}) {
    write_master(path, master, mode);
    CHECK(!key_store::open(dir.path + "/store", path, error));
    CHECK(error.find("group or others") != std::string::npos);
    check_no_secret(error, master);
  }
  write_master(path, master.substr(0, 31), 0600);
  CHECK(!key_store::open(dir.path + "/store", path, error));
  CHECK(error.find("exactly 32 bytes") != std::string::npos);
  write_master(path, master + "x", 0600);
  CHECK(!key_store::open(dir.path + "/store", path, error));
  CHECK(!key_store::open(dir.path + "/store", dir.path + "/missing.key", error));
  CHECK(error.find("not found") != std::string::npos);
  CHECK(!key_store::open(dir.path + "/store", dir.path, error)); // a directory
  write_master(path, master, 0600);
  CHECK_MESSAGE(key_store::open(dir.path + "/store", path, error), error);

  // A store whose default master key vanished does not silently get a new
  // one (its wrapped keys would all be lost).
  auto store = dir.path + "/default";
  REQUIRE(key_store::open(store, "", error));
  REQUIRE(::unlink((store + "/master.key").c_str()) == 0);
  CHECK(!key_store::open(store, "", error));
  CHECK(error.find("missing") != std::string::npos);
}

TEST_CASE("key store: corrupt or moved wrapped keys and bad account names are errors") {
  temp_dir dir;
  std::string error;
  auto keys = key_store::open(dir.path, "", error);
  REQUIRE_MESSAGE(keys, error);
  std::array<uint8_t, 32> a{}, b{};
  REQUIRE(keys->data_key("111111111111", a).empty());
  auto master = master_of(dir.path);
  keys.reset();
  std::string wrapped;
  REQUIRE(read_file(dir.path + "/accounts/111111111111.key", wrapped).ok());
  // Another account's name on this account's wrapped key: the AAD differs.
  REQUIRE(write_file_atomic(dir.path + "/accounts/222222222222.key", wrapped).ok());
  // A flipped bit.
  wrapped[20] = static_cast<char>(wrapped[20] ^ 1);
  REQUIRE(write_file_atomic(dir.path + "/accounts/333333333333.key", wrapped).ok());
  keys = key_store::open(dir.path, "", error);
  REQUIRE_MESSAGE(keys, error);
  for (auto account : {"222222222222", "333333333333"}) {
    error = keys->data_key(account, b);
    CHECK(error.find("fails authentication") != std::string::npos);
    check_no_secret(error, master);
    check_no_secret(error, bytes_of(a));
  }
  convergence_secret s{};
  for (std::string bad : {std::string{}, std::string{"../x"}, std::string{"a/b"}, std::string{"."},
                          std::string{"x y"}, std::string(65, 'a')}) {
    CHECK(!keys->data_key(bad, b).empty());
    CHECK(!keys->convergence(bad, convergence_domain::account, s).empty());
  }
}
