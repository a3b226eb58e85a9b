#pragma once

/// The key store: a local KMS for code storage (ARCHITECTURE.md §5).
///
/// One master key (32 bytes in a file of its own, mode 0600) wraps every
/// other key; nothing but the master key file holds a key in clear.
///
///   <dir>/master.key                  the master key (default location)
///   <dir>/key-check                   HMAC-SHA256(master, "nimbus key check")
///   <dir>/accounts/<account>.key      the account's data key, wrapped
///   <dir>/accounts/<account>.conv     the account's convergence secret, wrapped
///   <dir>/global.conv                 the node-wide convergence secret, wrapped
///
/// A wrapped key is "NKW1" || AES-256-GCM(master, random nonce, key) with the
/// AAD naming what it is ("data-key/<account>", "convergence/<account>",
/// "convergence/global"), so a file copied to another name fails to open.
/// Keys are created at first use from OpenSSL's CSPRNG, written atomically
/// and durably, and cached in memory. The key check makes a wrong master key
/// fail at open instead of at the first unwrap. Errors never contain key bytes.

#include "nimbus/storage/chunk.hpp"

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace nimbus::storage {

/// Which chunks deduplicate against each other (CS-1).
enum class convergence_domain {
  /// One secret per account: identical code stored by two accounts gives
  /// different chunks, so no account learns what another stored.
  account,
  /// One node-wide secret: identical chunks are stored once for everybody.
  global,
};

/// Per-account data keys and convergence secrets, wrapped under a master key.
/// Thread-safe.
class key_store {
public:
  /// Opens (creating if needed) the key store in `dir`. `master_key_file`
  /// empty means `<dir>/master.key`, created with 32 random bytes when the
  /// store is new. A master key file that is not exactly 32 bytes, not a
  /// regular file, or readable by group or others is refused, and so is a
  /// master key that does not match the stored key check.
  static std::unique_ptr<key_store> open(const std::string& dir,
                                         const std::string& master_key_file, std::string& error);

  ~key_store();
  key_store(const key_store&) = delete;
  key_store& operator=(const key_store&) = delete;

  /// The account's data key (seals its manifests), created at first use.
  std::string data_key(const std::string& account, std::array<uint8_t, 32>& out);

  /// The convergence secret that seals the account's chunks in `domain`.
  std::string convergence(const std::string& account, convergence_domain domain,
                          convergence_secret& out);

  /// True for account names the store accepts: [A-Za-z0-9_-]{1,64}.
  static bool valid_account(const std::string& account);

private:
  key_store(std::string dir, const std::array<uint8_t, 32>& master);
  std::string load_or_create(const std::string& path, const std::string& aad,
                             std::array<uint8_t, 32>& out);

  std::string dir_;
  std::array<uint8_t, 32> master_{};
  std::mutex mutex_;
  // Unwrapped keys by AAD (which names the key uniquely).
  std::map<std::string, std::array<uint8_t, 32>> cache_;
};

} // namespace nimbus::storage
