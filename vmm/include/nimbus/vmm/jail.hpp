#pragma once

/// The host side of a sandbox: starts the nimbus-jail helper, follows its
/// status, and controls and ends the sandbox. All calls block (process
/// creation, pipes, waits): call them from a thread that may block, never from
/// a CAF scheduler thread. One thread may sit in wait() while another calls
/// go(), terminate() or kill().

#include "nimbus/vmm/jail_spec.hpp"

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace nimbus::vmm {

/// How a sandbox ended.
struct jail_exit {
  /// True if the runtime exited normally with `code`; false if it was killed
  /// by signal `code` (or the sandbox was killed as a whole).
  bool exited = false;
  int code = 0;
};

/// One running sandbox.
class jail_process {
public:
  /// Starts nimbus-jail at `helper` with `spec`; the runtime's stdout and
  /// stderr go to `stdout_fd` and `stderr_fd`. Returns once the sandbox is
  /// assembled and waiting for go(), or nothing (with `error`) if it failed or
  /// did not get ready within `timeout`.
  static std::unique_ptr<jail_process> start(const std::string& helper, const jail_spec& spec,
                                             int stdout_fd, int stderr_fd,
                                             std::chrono::milliseconds timeout,
                                             std::string& error);

  /// Starts nimbus-jail ahead of time: it joins `cgroup_procs` at once and
  /// then waits for its spec (see configure()). Returns nothing (with
  /// `error`) if it cannot be started.
  static std::unique_ptr<jail_process> spawn(const std::string& helper,
                                             const std::vector<std::string>& cgroup_procs,
                                             int stdout_fd, int stderr_fd, std::string& error);

  /// Waits until a spawned helper has joined its cgroups. False on failure or
  /// timeout.
  bool wait_joined(std::chrono::milliseconds timeout);

  /// Hands a spawned helper its spec and waits until the sandbox is assembled
  /// (as start() does). False (with `error`) on failure or timeout.
  bool configure(const jail_spec& spec, std::chrono::milliseconds timeout, std::string& error);

  /// Kills the sandbox (if still running) and reaps the helper.
  ~jail_process();

  jail_process(const jail_process&) = delete;
  jail_process& operator=(const jail_process&) = delete;

  /// Host pid of the sandbox's PID 1.
  pid_t init_pid() const {
    return init_pid_;
  }

  /// The pipe on which the helper reports (readable when there is news,
  /// such as the sandbox's end); for event loops that call wait() then.
  int status_fd() const {
    return status_fd_;
  }

  /// Lets the sandbox start its runtime.
  bool go();

  /// Waits up to `timeout` for the sandbox to end.
  std::optional<jail_exit> wait(std::chrono::milliseconds timeout);

  /// Reads what the helper reported without waiting; returns how the
  /// sandbox ended once it has (for event loops watching status_fd()).
  std::optional<jail_exit> poll_exit();

  /// Asks the runtime to stop (SIGTERM, forwarded by PID 1).
  void terminate();

  /// Kills the sandbox at once (SIGKILL to PID 1 ends its pid namespace).
  void kill();

private:
  jail_process() = default;
  bool read_status(std::chrono::milliseconds timeout);
  pid_t helper_pid_ = -1;
  int spec_fd_ = -1;
  pid_t init_pid_ = -1;
  int init_pidfd_ = -1;
  std::mutex control_mutex_;
  int status_fd_ = -1;
  int control_fd_ = -1;
  bool ready_ = false;
  bool joined_ = false;
  std::string error_;
  std::optional<jail_exit> exit_;
  std::string buffer_;
};

/// Creates a TCP socket bound to `address:port` and listening, inside the
/// network namespace of process `pid` (by switching one short-lived thread
/// into it). Returns the descriptor, or -1 with `error` set.
int listen_in_netns(pid_t pid, const std::string& address, uint16_t port, std::string& error);

} // namespace nimbus::vmm
