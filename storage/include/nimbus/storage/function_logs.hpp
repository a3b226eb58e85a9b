#pragma once

/// Function logs: each invocation's log (runtime output framed by START, END
/// and REPORT) appended to one file per function under the data directory,
/// bounded in size by rotation (<name>.log becomes <name>.log.1, the older
/// .1 is dropped). Thread-safe. Logs are for the function's owner; they are
/// never written to nimbusd's own log.
///
/// Appends are buffered in memory and written by a flush thread at most
/// `flush_interval` later (or at once when a file's buffer passes 64 KiB), so
/// that a busy function costs one write() per interval instead of one per
/// invocation. tail() and the destructor flush first; a killed node loses
/// at most the last interval of logs, never an invocation.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace nimbus::storage {

/// Where function logs live.
class function_log_store {
public:
  /// Keeps logs under `directory`; a file rotates when it passes `max_bytes`.
  function_log_store(std::string directory, uint64_t max_bytes,
                     std::chrono::milliseconds flush_interval = std::chrono::milliseconds{200});

  /// Appends one invocation's log. Failures are swallowed (and counted):
  /// logging never fails an invocation.
  /// With `write_now`, the log is written before this returns (for
  /// asynchronous invocations, whose event is acknowledged right after).
  void append(const std::string& account_id, const std::string& function, std::string_view text,
              bool write_now = false);

  /// Returns at most the last `max_bytes` of the function's log, starting at
  /// a line boundary (including the rotated file when needed).
  std::string tail(const std::string& account_id, const std::string& function,
                   uint64_t max_bytes);

  /// Number of appends that failed.
  uint64_t failures() const;

  /// Writes every buffered append now.
  void flush();

  /// Closes the files kept open for appending.
  ~function_log_store();

  function_log_store(const function_log_store&) = delete;
  function_log_store& operator=(const function_log_store&) = delete;

private:
  /// A log file kept open for appending (invocations append often: no
  /// open, stat and close per invocation) and its size.
  struct open_file {
    int fd = -1;
    /// Bytes in the file plus the buffered ones.
    uint64_t size = 0;
    uint64_t last_use = 0;
    /// Appended, not yet written.
    std::string pending;
  };
  /// A file's buffer is written at once when it grows past this.
  static constexpr size_t max_pending = 64 * 1024;
  /// At most this many files stay open; the least recently used closes.
  static constexpr size_t max_open_files = 256;

  std::string path(const std::string& account_id, const std::string& function) const;
  open_file* open_for_append(const std::string& file, const std::string& account_id);
  void close_file(const std::string& file);
  /// Writes `f.pending` (dropped and counted on failure; the caller closes
  /// the file then). Holds mutex_.
  bool write_pending(open_file& f);
  void flush_locked();
  void flush_loop();
  std::string directory_;
  uint64_t max_bytes_;
  mutable std::mutex mutex_;
  uint64_t failures_ = 0;
  uint64_t uses_ = 0;
  std::map<std::string, open_file> open_;
  /// append()'s path buffer (guarded by mutex_).
  std::string path_scratch_;
  std::chrono::milliseconds flush_interval_;
  /// Something is buffered (the flush thread waits for it).
  bool dirty_ = false;
  bool stopping_ = false;
  std::condition_variable wake_;
  std::thread flusher_;
};

} // namespace nimbus::storage
