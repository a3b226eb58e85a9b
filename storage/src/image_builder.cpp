#include "nimbus/storage/image_builder.hpp"

#include "nimbus/storage/code_archive.hpp"
#include "nimbus/storage/staging_tree.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

namespace nimbus::storage {

namespace {

// Where Debian and others install mkfs.erofs. The environment is empty when
// it runs, so there is no PATH to search; and a PATH of the caller's would be
// one more input to a build that must not depend on its caller.
const char* find_mkfs() {
  for (const char* path : {"/usr/bin/mkfs.erofs", "/usr/sbin/mkfs.erofs", "/sbin/mkfs.erofs",
                           "/bin/mkfs.erofs", "/usr/local/bin/mkfs.erofs"})
    if (::access(path, X_OK) == 0)
      return path;
  return nullptr;
}

// The last line(s) of mkfs.erofs's output, for an error text.
std::string tail_of(const std::string& output) {
  auto end = output.find_last_not_of(" \n\r\t");
  if (end == std::string::npos)
    return "no message";
  auto text = output.substr(0, end + 1);
  if (text.size() > 600)
    text = "..." + text.substr(text.size() - 600);
  for (auto& c : text)
    if (c == '\n')
      c = ';';
  return text;
}

class fd_guard {
public:
  explicit fd_guard(int fd = -1) : fd_{fd} {}
  ~fd_guard() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const {
    return fd_;
  }
  void reset() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }

private:
  int fd_;
};

// Runs mkfs.erofs for `tree_dir` into `output`. Returns an error text.
std::string run_mkfs(const std::string& tree_dir, const std::string& output,
                     std::chrono::seconds timeout) {
  const char* mkfs = find_mkfs();
  if (mkfs == nullptr)
    return "mkfs.erofs is not installed (package erofs-utils)";
  std::string uuid = std::string{"-U"} + image_uuid;
  std::vector<std::string> args = {mkfs,   "--quiet",         "-T0",  uuid,    "--all-root",
                                   "-x-1", "-Enoinline_data", output, tree_dir};
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  char* envp[] = {nullptr};

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
    return std::string{"cannot create a pipe: "} + std::strerror(errno);
  fd_guard reader{pipe_fds[0]};
  fd_guard writer{pipe_fds[1]};

  // stdin from /dev/null, stdout and stderr into the pipe; every other
  // descriptor of ours is close-on-exec.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, writer.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, writer.get(), 2);
  // Default signal dispositions and an empty mask: an ignored SIGPIPE or a
  // blocked signal of ours must not leak into the child.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attributes, &all);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  int spawned = ::posix_spawn(&pid, mkfs, &actions, &attributes, argv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (spawned != 0)
    return std::string{"cannot start mkfs.erofs: "} + std::strerror(spawned);
  writer.reset();

  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string output_text;
  bool timed_out = false;
  char buffer[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{reader.get(), POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR)
      break;
    if (ready <= 0)
      continue;
    auto n = ::read(reader.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; // end of output: mkfs.erofs is exiting
    output_text.append(buffer, static_cast<size_t>(n));
    if (output_text.size() > 16384)
      output_text.erase(0, output_text.size() - 8192);
  }
  int status = 0;
  for (;;) {
    pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid)
      break;
    if (done < 0 && errno != EINTR)
      return std::string{"cannot wait for mkfs.erofs: "} + std::strerror(errno);
    if (timed_out || std::chrono::steady_clock::now() >= deadline) {
      timed_out = true;
      ::kill(pid, SIGKILL); // our own child, by its pid
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (timed_out)
    return "mkfs.erofs did not finish within " + std::to_string(timeout.count()) + " s";
  if (WIFSIGNALED(status))
    return "mkfs.erofs was killed by signal " + std::to_string(WTERMSIG(status)) + ": "
           + tail_of(output_text);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return "mkfs.erofs failed (exit " + std::to_string(WEXITSTATUS(status))
           + "): " + tail_of(output_text);
  return {};
}

template <class Unpack>
std::string flatten_with(Unpack unpack, const std::string& work_dir, const std::string& image_path,
                         const flatten_limits& limits) {
  staging_area area;
  if (auto problem =
          area.open(work_dir, "flatten", limits.max_bytes, limits.max_entries, on_conflict::refuse);
      !problem.empty())
    return problem;
  if (auto problem = unpack(area.tree()); !problem.empty())
    return problem;
  return build_erofs(area.tree().root(), image_path);
}

} // namespace

std::string build_erofs(const std::string& tree_dir, const std::string& image_path,
                        std::chrono::seconds timeout) {
  // mkfs.erofs 1.5 opens its output without O_TRUNC: always give it a fresh
  // file, then move the finished image into place.
  std::string temp = image_path + ".partial-XXXXXX";
  int fd = ::mkstemp(temp.data());
  if (fd < 0)
    return "cannot create " + image_path + ": " + std::strerror(errno);
  ::close(fd);
  auto problem = run_mkfs(tree_dir, temp, timeout);
  if (problem.empty() && ::rename(temp.c_str(), image_path.c_str()) != 0)
    problem = "cannot move the image to " + image_path + ": " + std::strerror(errno);
  if (!problem.empty())
    ::unlink(temp.c_str());
  return problem;
}

std::string build_erofs(const std::string& tree_dir, const std::string& image_path) {
  return build_erofs(tree_dir, image_path, std::chrono::hours{1});
}

std::string flatten_zip(const std::string& zip_path, const std::string& work_dir,
                        const std::string& image_path, const flatten_limits& limits) {
  return flatten_with([&](staging_tree& tree) { return unpack_zip_file(zip_path, tree); }, work_dir,
                      image_path, limits);
}

std::string flatten_zip(std::string_view zip_bytes, const std::string& work_dir,
                        const std::string& image_path, const flatten_limits& limits) {
  return flatten_with([&](staging_tree& tree) { return unpack_zip(zip_bytes, tree); }, work_dir,
                      image_path, limits);
}

} // namespace nimbus::storage
