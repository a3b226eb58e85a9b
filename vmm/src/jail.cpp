#include "nimbus/vmm/jail.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace nimbus::vmm {

namespace {

using clock = std::chrono::steady_clock;

void close_fd(int& fd) {
  if (fd >= 0)
    ::close(fd);
  fd = -1;
}

} // namespace

std::unique_ptr<jail_process> jail_process::spawn(const std::string& helper,
                                                  const std::vector<std::string>& cgroup_procs,
                                                  int stdout_fd, int stderr_fd,
                                                  std::string& error) {
  std::unique_ptr<jail_process> j{new jail_process};
  int spec_pipe[2], status_pipe[2], control_pipe[2];
  if (::pipe2(spec_pipe, O_CLOEXEC) != 0 || ::pipe2(status_pipe, O_CLOEXEC) != 0
      || ::pipe2(control_pipe, O_CLOEXEC) != 0) {
    error = std::string{"pipe: "} + std::strerror(errno);
    return nullptr;
  }
  // posix_spawn, not fork: the worker is multi-threaded, and between fork and
  // exec only async-signal-safe calls are allowed.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
  posix_spawn_file_actions_adddup2(&actions, spec_pipe[0], jail_spec_fd);
  posix_spawn_file_actions_adddup2(&actions, status_pipe[1], jail_status_fd);
  posix_spawn_file_actions_adddup2(&actions, control_pipe[0], jail_control_fd);
  // Default dispositions and an empty mask: the node ignores SIGPIPE and
  // blocks SIGTERM, and neither may reach the sandbox (a function expects
  // SIGPIPE to be fatal, as on Lambda).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  // cgroup paths are no secret: they travel as arguments.
  std::vector<char*> argv{const_cast<char*>(helper.c_str())};
  for (const auto& p : cgroup_procs)
    argv.push_back(const_cast<char*>(p.c_str()));
  argv.push_back(nullptr);
  char* envp[] = {nullptr};
  int rc = ::posix_spawn(&j->helper_pid_, helper.c_str(), &actions, &attr, argv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(spec_pipe[0]);
  ::close(status_pipe[1]);
  ::close(control_pipe[0]);
  j->spec_fd_ = spec_pipe[1];
  j->status_fd_ = status_pipe[0];
  j->control_fd_ = control_pipe[1];
  if (rc != 0) {
    j->helper_pid_ = -1;
    error = "spawn " + helper + ": " + std::strerror(rc);
    return nullptr;
  }
  return j;
}

bool jail_process::wait_joined(std::chrono::milliseconds timeout) {
  auto deadline = clock::now() + timeout;
  while (!joined_ && error_.empty() && !exit_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0 || !read_status(left))
      break;
  }
  return joined_;
}

bool jail_process::configure(const jail_spec& spec, std::chrono::milliseconds timeout,
                             std::string& error) {
  // Refused here too, so the worker gets the reason without a round trip.
  if (auto problem = validate(spec); !problem.empty()) {
    close_fd(spec_fd_); // the waiting helper reads EOF and exits
    error = problem;
    return false;
  }
  auto json = to_json(spec);
  // The spec fits the pipe buffer (64 KiB): the environment is limited to
  // 4 KB and the rest is paths.
  bool written = spec_fd_ >= 0 && json.size() <= 60'000
                 && ::write(spec_fd_, json.data(), json.size())
                      == static_cast<ssize_t>(json.size());
  close_fd(spec_fd_);
  if (!written) {
    error = "cannot hand the spec to the sandbox helper";
    return false;
  }
  auto deadline = clock::now() + timeout;
  while (!(ready_ && init_pid_ > 0) && error_.empty() && !exit_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0 || !read_status(left))
      break;
  }
  if (!error_.empty()) {
    error = error_;
    return false;
  }
  if (!(ready_ && init_pid_ > 0)) {
    error = exit_ ? "sandbox ended during setup" : "sandbox setup timed out";
    return false;
  }
  // Signals go through a pidfd: unlike a pid, it can never name another
  // process after PID 1 has died and its pid has been reused.
  init_pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, init_pid_, 0));
  if (init_pidfd_ < 0) {
    error = std::string{"pidfd_open: "} + std::strerror(errno);
    return false;
  }
  return true;
}

std::unique_ptr<jail_process> jail_process::start(const std::string& helper,
                                                  const jail_spec& spec, int stdout_fd,
                                                  int stderr_fd,
                                                  std::chrono::milliseconds timeout,
                                                  std::string& error) {
  auto j = spawn(helper, {}, stdout_fd, stderr_fd, error);
  if (!j || !j->configure(spec, timeout, error))
    return nullptr;
  return j;
}

bool jail_process::read_status(std::chrono::milliseconds timeout) {
  if (status_fd_ < 0)
    return false;
  pollfd p{status_fd_, POLLIN, 0};
  int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  if (n <= 0)
    return n == 0 ? false : errno == EINTR;
  char buf[512];
  auto got = ::read(status_fd_, buf, sizeof buf);
  if (got <= 0) {
    // The helper is gone without saying how the sandbox ended.
    close_fd(status_fd_);
    if (!exit_)
      exit_ = jail_exit{false, SIGKILL};
    return false;
  }
  buffer_.append(buf, static_cast<size_t>(got));
  size_t nl;
  while ((nl = buffer_.find('\n')) != std::string::npos) {
    auto line = buffer_.substr(0, nl);
    buffer_.erase(0, nl + 1);
    if (line.rfind("pid ", 0) == 0)
      init_pid_ = std::atoi(line.c_str() + 4);
    else if (line == "ready")
      ready_ = true;
    else if (line == "joined")
      joined_ = true;
    else if (line.rfind("error ", 0) == 0)
      error_ = "sandbox setup failed: " + line.substr(6);
    else if (line.rfind("exit ", 0) == 0)
      exit_ = jail_exit{true, std::atoi(line.c_str() + 5)};
    else if (line.rfind("signal ", 0) == 0)
      exit_ = jail_exit{false, std::atoi(line.c_str() + 7)};
  }
  return true;
}

bool jail_process::go() {
  std::lock_guard<std::mutex> guard{control_mutex_};
  return control_fd_ >= 0 && ::write(control_fd_, "go\n", 3) == 3;
}

std::optional<jail_exit> jail_process::wait(std::chrono::milliseconds timeout) {
  auto deadline = clock::now() + timeout;
  while (!exit_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0)
      break;
    read_status(left);
  }
  if (exit_ && helper_pid_ > 0) {
    int status;
    ::waitpid(helper_pid_, &status, 0);
    helper_pid_ = -1;
  }
  return exit_;
}

std::optional<jail_exit> jail_process::poll_exit() {
  if (!exit_)
    read_status(std::chrono::milliseconds{0});
  if (exit_ && helper_pid_ > 0) {
    // The helper exits right after its report.
    int status;
    ::waitpid(helper_pid_, &status, 0);
    helper_pid_ = -1;
  }
  return exit_;
}

void jail_process::terminate() {
  if (init_pidfd_ >= 0)
    ::syscall(SYS_pidfd_send_signal, init_pidfd_, SIGTERM, nullptr, 0);
}

void jail_process::kill() {
  if (init_pidfd_ >= 0)
    ::syscall(SYS_pidfd_send_signal, init_pidfd_, SIGKILL, nullptr, 0);
  else if (init_pid_ > 0 && !ready_)
    ::kill(init_pid_, SIGKILL); // still in setup: not yet reaped, the pid is ours
  // Closing the control pipe also tells PID 1 to go, should the kill miss.
  std::lock_guard<std::mutex> guard{control_mutex_};
  close_fd(control_fd_);
}

jail_process::~jail_process() {
  // A helper still waiting for its spec reads EOF and exits.
  close_fd(spec_fd_);
  kill();
  if (helper_pid_ > 0) {
    // After SIGKILL to PID 1 the helper reports and exits promptly.
    wait(std::chrono::milliseconds{2000});
    if (helper_pid_ > 0) {
      ::kill(helper_pid_, SIGKILL);
      int status;
      ::waitpid(helper_pid_, &status, 0);
    }
  }
  close_fd(status_fd_);
  close_fd(control_fd_);
  close_fd(init_pidfd_);
  close_fd(spec_fd_);
}

int listen_in_netns(pid_t pid, const std::string& address, uint16_t port, std::string& error) {
  int result = -1;
  // setns(CLONE_NEWNET) changes only the calling thread, and a socket keeps
  // the namespace it was created in: a throwaway thread does the switch.
  std::thread worker{[&] {
    auto path = "/proc/" + std::to_string(pid) + "/ns/net";
    int ns = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
      error = "open " + path + ": " + std::strerror(errno);
      return;
    }
    if (::setns(ns, CLONE_NEWNET) != 0) {
      error = std::string{"setns: "} + std::strerror(errno);
      ::close(ns);
      return;
    }
    ::close(ns);
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      error = std::string{"socket: "} + std::strerror(errno);
      return;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (::inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1) {
      error = "bad address " + address;
      ::close(fd);
      return;
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0
        || ::listen(fd, 64) != 0) {
      error = std::string{"bind/listen: "} + std::strerror(errno);
      ::close(fd);
      return;
    }
    result = fd;
  }};
  worker.join();
  return result;
}

} // namespace nimbus::vmm
