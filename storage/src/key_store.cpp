#include "nimbus/storage/key_store.hpp"

#include "aead.hpp"
#include "nimbus/storage/digest.hpp"
#include "nimbus/storage/durable_file.hpp"

#include <openssl/crypto.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace nimbus::storage {

namespace {

constexpr std::string_view wrap_magic = "NKW1";
constexpr std::string_view check_label = "nimbus key check";

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// Temporary files of interrupted atomic writes (a key being created when the
// process died): nothing refers to them.
std::string remove_temp_files(const std::string& dir) {
  std::vector<std::string> names;
  if (auto s = list_directory(dir, names); !s.ok())
    return s.error;
  for (auto& name : names)
    if (ends_with(name, temp_suffix))
      if (auto s = remove_file_durable(dir + "/" + name); !s.ok())
        return s.error;
  return {};
}

// Reads the master key, refusing files that others could read: a key that
// leaked to another user protects nothing.
std::string read_master_key(const std::string& path, std::array<uint8_t, 32>& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return "master key file " + path + ": " + std::strerror(errno);
  struct stat st {};
  std::string error;
  if (::fstat(fd, &st) != 0)
    error = "master key file " + path + ": " + std::strerror(errno);
  else if (!S_ISREG(st.st_mode))
    error = "master key file " + path + ": not a regular file";
  else if ((st.st_mode & 077) != 0)
    error = "master key file " + path
            + ": readable or writable by group or others (chmod 600 it)";
  else if (st.st_size != static_cast<off_t>(out.size()))
    error = "master key file " + path + ": must hold exactly 32 bytes, holds "
            + std::to_string(st.st_size);
  if (error.empty()) {
    size_t done = 0;
    while (done < out.size()) {
      auto n = ::read(fd, out.data() + done, out.size() - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        error = "master key file " + path + ": short read";
        break;
      }
      done += static_cast<size_t>(n);
    }
  }
  ::close(fd);
  return error;
}

std::array<uint8_t, 32> key_check(const std::array<uint8_t, 32>& master) {
  return hmac_sha256(std::string_view{reinterpret_cast<const char*>(master.data()), master.size()},
                     check_label);
}

} // namespace

bool key_store::valid_account(const std::string& account) {
  if (account.empty() || account.size() > 64)
    return false;
  for (char c : account)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
          || c == '-'))
      return false;
  return true;
}

std::unique_ptr<key_store> key_store::open(const std::string& dir,
                                           const std::string& master_key_file,
                                           std::string& error) {
  error.clear();
  if (auto s = make_directories(dir + "/accounts"); !s.ok()) {
    error = "key store: " + s.error;
    return nullptr;
  }
  for (auto sub : {dir, dir + "/accounts"})
    if (auto e = remove_temp_files(sub); !e.empty()) {
      error = "key store: " + e;
      return nullptr;
    }
  auto check_path = dir + "/key-check";
  auto master_path = master_key_file.empty() ? dir + "/master.key" : master_key_file;
  if (!file_exists(master_path)) {
    if (!master_key_file.empty()) {
      error = "master key file " + master_path + ": not found";
      return nullptr;
    }
    // A new master key would make every wrapped key unreadable: only a new
    // store gets one.
    if (file_exists(check_path)) {
      error = "key store " + dir + ": master key " + master_path
              + " is missing but the store already holds keys; refusing to create a new one";
      return nullptr;
    }
    auto fresh = random_bytes(32);
    auto s = write_file_atomic(master_path, fresh);
    OPENSSL_cleanse(fresh.data(), fresh.size());
    if (!s.ok()) {
      error = "key store: " + s.error;
      return nullptr;
    }
  }
  std::array<uint8_t, 32> master{};
  if (error = read_master_key(master_path, master); !error.empty())
    return nullptr;
  auto check = key_check(master);
  std::unique_ptr<key_store> store{new key_store(dir, master)};
  OPENSSL_cleanse(master.data(), master.size());
  std::string stored;
  if (file_exists(check_path)) {
    if (auto s = read_file(check_path, stored); !s.ok()) {
      error = "key store: " + s.error;
      return nullptr;
    }
    if (stored.size() != check.size()) {
      error = "key store " + dir + ": key check file is corrupt";
      return nullptr;
    }
    if (!constant_time_equal(stored, as_bytes(check))) {
      error = "key store " + dir + ": master key " + master_path
              + " does not match this key store (wrong master key file?)";
      return nullptr;
    }
  } else if (auto s = write_file_atomic(check_path, as_bytes(check)); !s.ok()) {
    error = "key store: " + s.error;
    return nullptr;
  }
  return store;
}

key_store::key_store(std::string dir, const std::array<uint8_t, 32>& master)
    : dir_(std::move(dir)), master_(master) {}

key_store::~key_store() {
  OPENSSL_cleanse(master_.data(), master_.size());
  for (auto& [name, key] : cache_)
    OPENSSL_cleanse(key.data(), key.size());
}

std::string key_store::load_or_create(const std::string& path, const std::string& aad,
                                      std::array<uint8_t, 32>& out) {
  std::lock_guard lock(mutex_);
  if (auto i = cache_.find(aad); i != cache_.end()) {
    out = i->second;
    return {};
  }
  std::string wrapped;
  if (file_exists(path)) {
    if (auto s = read_file(path, wrapped); !s.ok())
      return "key store: " + s.error;
    std::string key;
    if (wrapped.substr(0, wrap_magic.size()) != wrap_magic
        || !detail::aead_open(master_, aad, std::string_view{wrapped}.substr(wrap_magic.size()),
                              key)
        || key.size() != out.size()) {
      OPENSSL_cleanse(key.data(), key.size());
      return "key store: " + path
             + " fails authentication (corrupt, or wrapped under another master key)";
    }
    std::memcpy(out.data(), key.data(), out.size());
    OPENSSL_cleanse(key.data(), key.size());
  } else {
    auto key = random_bytes(out.size());
    wrapped = std::string{wrap_magic} + detail::aead_seal(master_, aad, key);
    std::memcpy(out.data(), key.data(), out.size());
    OPENSSL_cleanse(key.data(), key.size());
    if (auto s = write_file_atomic(path, wrapped); !s.ok()) {
      OPENSSL_cleanse(out.data(), out.size());
      return "key store: " + s.error;
    }
  }
  cache_.emplace(aad, out);
  return {};
}

std::string key_store::data_key(const std::string& account, std::array<uint8_t, 32>& out) {
  if (!valid_account(account))
    return "key store: invalid account name";
  return load_or_create(dir_ + "/accounts/" + account + ".key", "data-key/" + account, out);
}

std::string key_store::convergence(const std::string& account, convergence_domain domain,
                                   convergence_secret& out) {
  if (domain == convergence_domain::global)
    return load_or_create(dir_ + "/global.conv", "convergence/global", out);
  if (!valid_account(account))
    return "key store: invalid account name";
  return load_or_create(dir_ + "/accounts/" + account + ".conv", "convergence/" + account, out);
}

} // namespace nimbus::storage
