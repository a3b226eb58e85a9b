// nimbus-jail: builds one sandbox and runs a function's runtime inside it.
//
// The worker starts this helper (posix_spawn, so nothing non-async-signal-safe
// runs between fork and exec in the multi-threaded worker) with:
//   argv  cgroup.procs files to join at once (optional; see step 1)
//   fd 3  the jail_spec as JSON (read to EOF)
//   fd 4  status lines to the worker: "pid N", "ready", "error ...", "exit N"
//   fd 5  control from the worker: "go"; EOF means the worker is gone
//   fd 1, fd 2  where the runtime's stdout and stderr go
//
// The sequence reads top to bottom; each step says why it is there:
//   outer (host namespaces, root):
//     1. join the environment's cgroups, so every later process is limited;
//     2. join the prepared network namespace if given (see netns_pool.hpp),
//        then unshare mount, uts, ipc, (net,) cgroup and pid namespaces;
//     3. fork: the child is PID 1 of the new pid namespace; report its host
//        pid, then wait for it and report how it ended.
//   inner PID 1:
//     4. die with the outer helper (PDEATHSIG), bring up loopback;
//     5. assemble a read-only root on a tmpfs, in one of two modes:
//          zip mode: host /usr (and the merged-usr links), /etc with only
//          what dynamic linking needs, code at /var/task, bootstrap files at
//          /var/runtime;
//          image-root mode: every top-level entry of the image bound
//          read-only (symlinks recreated), nothing of the host; a minimal
//          /etc only if the image has none;
//        then, in both, a sized /tmp, a minimal /dev, a fresh /proc (the
//        image's own /tmp, /dev and /proc are not used); pivot_root into it,
//        detach the old root, check that the working directory exists;
//     6. report "ready", wait for "go" (the worker binds the Runtime API in
//        our network namespace in between);
//     7. fork the runtime: set rlimits, SCHED_BATCH and the CPU (if the
//        spec names one), drop every capability, switch to the unprivileged
//        uid/gid, set no_new_privs, enter the working directory, load the
//        seccomp filter (built before the spec arrived), exec
//        (image-root mode: a bare argv[0] is looked up in the PATH of the
//        function's environment); a failure from here on is written to the
//        runtime's stderr (the function's log) and ends the runtime with
//        status 127;
//     8. reap orphans; when the runtime exits, exit with its status, which
//        kills everything left in the pid namespace. A runtime killed by a
//        signal (the OOM killer's SIGKILL) is noted in a page shared with the
//        outer helper, which then reports "signal N", not "exit 128+N".

#include "nimbus/vmm/jail_spec.hpp"
#include "nimbus/vmm/netns_pool.hpp"
#include "nimbus/vmm/seccomp_policy.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using nimbus::vmm::jail_control_fd;
using nimbus::vmm::jail_spec;
using nimbus::vmm::jail_spec_fd;
using nimbus::vmm::jail_status_fd;

extern char** environ;

namespace {

// Shared between the outer helper and PID 1 (MAP_SHARED, set up before the
// fork): the signal that killed the runtime, or 0. PID 1's own exit status
// cannot carry it: PID 1 cannot kill itself with a signal.
volatile int* runtime_signal = nullptr;

// The runtime's seccomp filter, built by main() before the spec arrives, or
// why it could not be built.
nimbus::vmm::seccomp_program runtime_filter;
std::string runtime_filter_error;

void report(const std::string& line) {
  auto text = line + "\n";
  // One write per line: writes up to PIPE_BUF are atomic, so the outer
  // helper's and PID 1's lines never interleave.
  [[maybe_unused]] auto n = ::write(jail_status_fd, text.data(), text.size());
}

[[noreturn]] void die(const std::string& step, int err = errno) {
  report("error " + step + (err ? std::string{": "} + std::strerror(err) : std::string{}));
  ::_exit(127);
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  while (true) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

void write_file(const std::string& path, const std::string& content, mode_t mode = 0644) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    die("create " + path);
  if (::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size()))
    die("write " + path);
  ::close(fd);
}

void make_dir(const std::string& path, mode_t mode = 0755) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST)
    die("mkdir " + path);
}

bool is_symlink(const std::string& path, std::string& target) {
  char buf[4096];
  auto n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  if (n < 0)
    return false;
  target.assign(buf, static_cast<size_t>(n));
  return true;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Bind-mounts `source` at `target` read-only, without setuid or devices.
void bind_read_only(const std::string& source, const std::string& target, bool recursive = true) {
  unsigned long flags = MS_BIND | (recursive ? MS_REC : 0);
  if (::mount(source.c_str(), target.c_str(), nullptr, flags, nullptr) != 0)
    die("bind " + source);
  // A bind mount ignores MS_RDONLY on creation; it takes a remount.
  if (::mount(nullptr, target.c_str(), nullptr,
              MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr)
      != 0)
    die("remount read-only " + target);
}

// Step 4: loopback is the only interface, and it starts down.
void loopback_up() {
  if (auto error = nimbus::vmm::bring_up_loopback(); !error.empty())
    die(error, 0);
}

// Step 5, zip mode and image-root mode without an /etc: a read-only tmpfs
// with only what dynamic linking and name lookups of localhost need.
// `host_loader_cache`: the host's ld.so.cache, which matches the host's /usr
// (and nothing an image brings).
void build_minimal_etc(const jail_spec& spec, bool host_loader_cache) {
  const auto etc = spec.root_dir + "/etc";
  make_dir(etc);
  if (::mount("nimbus-etc", etc.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755") != 0)
    die("mount /etc tmpfs");
  write_file(etc + "/passwd", "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                              "sbx_user1051:x:" + std::to_string(spec.uid) + ":"
                              + std::to_string(spec.gid) + "::/tmp:/usr/sbin/nologin\n");
  write_file(etc + "/group", "root:x:0:\nsbx_user1051:x:" + std::to_string(spec.gid) + ":\n");
  write_file(etc + "/hosts", "127.0.0.1 localhost\n::1 localhost\n");
  write_file(etc + "/hostname", spec.id + "\n");
  write_file(etc + "/resolv.conf", "");
  write_file(etc + "/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n");
  if (host_loader_cache && exists("/etc/ld.so.cache")) {
    write_file(etc + "/ld.so.cache", "");
    bind_read_only("/etc/ld.so.cache", etc + "/ld.so.cache", false);
  }
  if (::mount(nullptr, etc.c_str(), nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
              "size=64k,mode=755")
      != 0)
    die("remount /etc read-only");
}

// Step 5, zip mode: the host's runtime directories and the function's code.
void build_zip_root(const jail_spec& spec) {
  const auto& root = spec.root_dir;
  if (spec.rootfs.empty()) {
    // The host's runtime directories, read-only. Debian's merged /usr makes
    // /bin, /lib, /lib64 and /sbin symlinks into /usr: recreate those.
    make_dir(root + "/usr");
    bind_read_only("/usr", root + "/usr");
    for (const char* dir : {"/bin", "/sbin", "/lib", "/lib64"}) {
      std::string target;
      if (is_symlink(dir, target)) {
        if (::symlink(target.c_str(), (root + dir).c_str()) != 0)
          die(std::string{"symlink "} + dir);
      } else if (exists(dir)) {
        make_dir(root + dir);
        bind_read_only(dir, root + dir);
      }
    }
    build_minimal_etc(spec, true);
  } else {
    bind_read_only(spec.rootfs, root);
  }
  // The function's code and Nimbus's bootstrap files, read-only.
  for (const char* dir : {"/var", "/var/task", "/var/runtime", "/opt", "/tmp", "/dev", "/proc"})
    if (!exists(root + dir))
      make_dir(root + dir);
  bind_read_only(spec.code_dir, root + "/var/task");
  if (!spec.runtime_dir.empty())
    bind_read_only(spec.runtime_dir, root + "/var/runtime");
}

// Step 5, image-root mode: the image's top-level entries, read-only, on our
// root tmpfs. The tmpfs (not a bind of the whole image) lets us put our own
// /tmp, /dev and /proc, and an /etc where the image has none, without
// writing into the image. Nothing here follows a link of the image: the
// entries are opened with O_NOFOLLOW and bound through their descriptors,
// and image symlinks are only recreated (they resolve once we are inside).
void build_image_root(const jail_spec& spec) {
  const auto& root = spec.root_dir;
  int image = ::open(spec.image_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (image < 0)
    die("open image " + spec.image_root);
  // A second descriptor for readdir (an O_PATH one cannot list).
  int listing = ::openat(image, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* dir = listing < 0 ? nullptr : ::fdopendir(listing);
  if (dir == nullptr)
    die("list image " + spec.image_root);
  while (dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    // Ours, not the image's: the sized /tmp, the minimal /dev, a fresh /proc
    // and the pivot point.
    if (name == "." || name == ".." || name == "tmp" || name == "dev" || name == "proc"
        || name == ".old-root")
      continue;
    const auto target = root + "/" + name;
    int fd = ::openat(image, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0)
      die("image entry /" + name);
    if (S_ISLNK(st.st_mode)) {
      char link[4096];
      auto n = ::readlinkat(image, name.c_str(), link, sizeof link - 1);
      if (n < 0)
        die("read image link /" + name);
      link[n] = '\0';
      if (::symlink(link, target.c_str()) != 0)
        die("symlink /" + name);
    } else if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) {
      if (S_ISDIR(st.st_mode))
        make_dir(target);
      else
        write_file(target, "", 0644);
      // Not recursive: nothing mounted below the image comes along.
      bind_read_only("/proc/self/fd/" + std::to_string(fd), target, false);
    }
    // Device nodes, fifos and sockets at the top level are left out.
    ::close(fd);
  }
  ::closedir(dir);
  ::close(image);
  if (!exists(root + "/etc"))
    build_minimal_etc(spec, false);
  for (const char* dir : {"/tmp", "/dev", "/proc"})
    make_dir(root + dir);
}

// Step 5: the sandbox's file system.
void build_root(const jail_spec& spec) {
  // Nothing we mount may propagate back to the host's mount table.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    die("make mounts private");
  const auto& root = spec.root_dir;
  if (spec.rootfs.empty()
      && ::mount("nimbus-root", root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
             != 0)
    die("mount root tmpfs");
  if (spec.image_root.empty())
    build_zip_root(spec);
  else
    build_image_root(spec);
  // /tmp: the only writable place, sized by EphemeralStorage.
  auto tmp_options = "size=" + std::to_string(spec.tmp_bytes) + ",mode=1777";
  if (::mount("nimbus-tmp", (root + "/tmp").c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
              tmp_options.c_str())
      != 0)
    die("mount /tmp");
  // /dev: a handful of harmless devices bound from the host; nothing else.
  if (::mount("nimbus-dev", (root + "/dev").c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC,
              "size=64k,mode=755")
      != 0)
    die("mount /dev");
  for (const char* dev : {"null", "zero", "full", "random", "urandom"}) {
    auto target = root + "/dev/" + dev;
    write_file(target, "", 0666);
    if (::mount((std::string{"/dev/"} + dev).c_str(), target.c_str(), nullptr, MS_BIND, nullptr)
        != 0)
      die(std::string{"bind /dev/"} + dev);
  }
  for (auto [name, target] : {std::pair{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"},
                              {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}})
    if (::symlink(target, (root + "/dev/" + name).c_str()) != 0)
      die(std::string{"symlink /dev/"} + name);
  if (::mount(nullptr, (root + "/dev").c_str(), nullptr,
              MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
      != 0)
    die("remount /dev read-only");
  // Enter the new root and drop every path back to the host's.
  make_dir(root + "/.old-root", 0700);
  if (::syscall(SYS_pivot_root, root.c_str(), (root + "/.old-root").c_str()) != 0)
    die("pivot_root");
  if (::chdir("/") != 0)
    die("chdir /");
  if (::umount2("/.old-root", MNT_DETACH) != 0)
    die("detach old root");
  // The root tmpfs is ours; the directory may stay (read-only, empty).
  ::rmdir("/.old-root");
  // A /proc of our own pid namespace: no host process is visible.
  if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    die("mount /proc");
  if (spec.rootfs.empty()
      && ::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
                 nullptr)
           != 0)
    die("remount root read-only");
  if (::sethostname(spec.id.data(), std::min<size_t>(spec.id.size(), 64)) != 0)
    die("sethostname");
  // A missing working directory is the function's configuration error:
  // report it now, as a failed setup, rather than as a runtime that died.
  // (Whether the uid may enter it shows in step 7.)
  auto workdir = nimbus::vmm::effective_workdir(spec);
  struct stat st {};
  if (::stat(workdir.c_str(), &st) != 0)
    die("workdir " + workdir);
  if (!S_ISDIR(st.st_mode))
    die("workdir " + workdir, ENOTDIR);
}

// Step 7: once the status pipe is closed, failures go to the runtime's
// stderr, the function's log (paths and errno only).
[[noreturn]] void runtime_die(const std::string& step, int err = errno) {
  auto text = "nimbus-jail: " + step + (err ? std::string{": "} + std::strerror(err) : "") + "\n";
  [[maybe_unused]] auto n = ::write(2, text.data(), text.size());
  ::_exit(127);
}

// Step 7, in the runtime's process: give up everything, then exec.
[[noreturn]] void exec_runtime(const jail_spec& spec) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd < 0 || ::dup2(null_fd, 0) < 0)
    die("stdin");
  // Only stdin, stdout and stderr cross into the runtime.
  ::syscall(SYS_close_range, 3u, ~0u, 0u);
  rlimit nofile{spec.nofile, spec.nofile};
  rlimit core{0, 0};
  rlimit fsize{spec.tmp_bytes, spec.tmp_bytes};
  if (::setrlimit(RLIMIT_NOFILE, &nofile) != 0 || ::setrlimit(RLIMIT_CORE, &core) != 0
      || ::setrlimit(RLIMIT_FSIZE, &fsize) != 0)
    runtime_die("setrlimit");
  // SCHED_BATCH: a runtime woken by its next event does not preempt the
  // node's io thread that wrote the event (that thread usually has more
  // responses to write); it runs as soon as the thread waits or on the other
  // CPU. Measured on the warm C path under load: x1.11 req/s, and the
  // runtime's CPU per invoke fell from 53 to 42 us.
  // Its CPU share is still set by its cgroup; the function may switch itself
  // back to SCHED_OTHER, which only gives it its wake-up preemption back.
  sched_param no_priority{};
  if (::sched_setscheduler(0, SCHED_BATCH, &no_priority) != 0)
    runtime_die("sched_setscheduler");
  // A CPU of its own when the worker names one: the one of the io thread
  // serving its Runtime API, so an invocation's wake-ups stay on one CPU.
  if (spec.cpu >= 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(spec.cpu, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0)
      runtime_die("sched_setaffinity");
  }
  // No capability can ever come back: empty the bounding and ambient sets,
  // then switch to the unprivileged user, which clears the rest.
  for (int cap = 0; cap <= CAP_LAST_CAP; ++cap)
    ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
  ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  if (::setgroups(0, nullptr) != 0)
    runtime_die("setgroups");
  if (::setresgid(spec.gid, spec.gid, spec.gid) != 0)
    runtime_die("setresgid");
  if (::setresuid(spec.uid, spec.uid, spec.uid) != 0)
    runtime_die("setresuid");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    runtime_die("no_new_privs");
  // As the unprivileged user: a directory it may not enter fails here.
  auto workdir = nimbus::vmm::effective_workdir(spec);
  if (::chdir(workdir.c_str()) != 0)
    runtime_die("chdir " + workdir);
  std::vector<char*> argv;
  for (const auto& a : spec.argv)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : spec.env)
    envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  // execvpe searches the PATH of our own environment (empty: posix_spawn
  // gave us none), so the lookup environment is the function's, plus the
  // default PATH if it sets none; the runtime gets exactly spec.env.
  std::string default_path = std::string{"PATH="} + nimbus::vmm::jail_default_path;
  std::vector<char*> lookup_env = envp;
  bool has_path = false;
  for (const auto& e : spec.env)
    has_path = has_path || e.rfind("PATH=", 0) == 0;
  if (!has_path)
    lookup_env.insert(lookup_env.begin(), default_path.data());
  // The filter goes on last: everything above needs calls it denies.
  if (!runtime_filter_error.empty())
    runtime_die("seccomp: " + runtime_filter_error, 0);
  if (auto err = nimbus::vmm::load_seccomp_program(runtime_filter); !err.empty())
    runtime_die("seccomp: " + err, 0);
  if (spec.image_root.empty()) {
    ::execve(argv[0], argv.data(), envp.data());
  } else {
    environ = lookup_env.data();
    ::execvpe(argv[0], argv.data(), envp.data());
  }
  runtime_die("exec " + spec.argv[0]);
}

// Steps 4-8: PID 1 of the sandbox.
[[noreturn]] void run_init(const jail_spec& spec) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  loopback_up();
  build_root(spec);
  report("ready");
  char buf[8] = {};
  ssize_t n;
  do
    n = ::read(jail_control_fd, buf, sizeof buf);
  while (n < 0 && errno == EINTR);
  if (n < 2 || std::strncmp(buf, "go", 2) != 0)
    ::_exit(125); // the worker went away before starting us
  // SIGCHLD and SIGTERM arrive through a signalfd, polled together with the
  // control pipe (whose EOF means the worker died).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGCHLD);
  sigaddset(&signals, SIGTERM);
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  int sfd = ::signalfd(-1, &signals, SFD_CLOEXEC);
  if (sfd < 0)
    die("signalfd");
  pid_t runtime = ::fork();
  if (runtime < 0)
    die("fork runtime");
  if (runtime == 0)
    exec_runtime(spec);
  pollfd fds[2] = {{sfd, POLLIN, 0}, {jail_control_fd, POLLIN, 0}};
  while (true) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      die("poll");
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      char c;
      if (::read(jail_control_fd, &c, 1) <= 0)
        ::_exit(124); // the worker is gone: take the sandbox down with us
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      if (::read(sfd, &info, sizeof info) != sizeof info)
        continue;
      if (info.ssi_signo == SIGTERM) {
        ::kill(runtime, SIGTERM);
        continue;
      }
      int status = 0;
      pid_t pid;
      while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0)
        if (pid == runtime) {
          if (WIFSIGNALED(status))
            *runtime_signal = WTERMSIG(status);
          ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
    }
  }
}

} // namespace

void join_cgroups(const std::vector<std::string>& procs_files) {
  auto self = std::to_string(::getpid());
  for (const auto& procs : procs_files) {
    int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, self.data(), self.size()) != static_cast<ssize_t>(self.size()))
      die("join cgroup " + procs);
    ::close(fd);
  }
}

int main(int argc, char** argv) {
  // Steps 1-3 run as the outer helper, in the host's namespaces.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Step 1 may come first: cgroups named on the command line are joined
  // before the spec arrives. A pool of helpers started ahead of time pays
  // the slow part (a cgroup v1 memory join took 5-27 ms) before anyone waits.
  std::vector<std::string> early_cgroups(argv + 1, argv + argc);
  join_cgroups(early_cgroups);
  if (!early_cgroups.empty())
    report("joined");
  // The runtime's seccomp filter is the same for every sandbox: build it now,
  // while a pooled helper waits for its spec, so that the runtime child
  // (step 7) only has to load it. An error is reported there.
  runtime_filter_error = nimbus::vmm::compile_seccomp_policy(runtime_filter);
  std::string error;
  auto spec = nimbus::vmm::jail_spec_from_json(read_all(jail_spec_fd), error);
  ::close(jail_spec_fd);
  if (!spec)
    die("spec: " + error, 0);
  join_cgroups(spec->cgroup_procs);
  // A prepared network namespace is joined; otherwise a new one is made.
  int new_net = CLONE_NEWNET;
  if (!spec->netns.empty()) {
    int ns = ::open(spec->netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0)
      die("join network namespace");
    ::close(ns);
    new_net = 0;
  }
  if (::unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | new_net | CLONE_NEWCGROUP
                | CLONE_NEWPID)
      != 0)
    die("unshare");
  void* shared = ::mmap(nullptr, sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                        -1, 0);
  if (shared == MAP_FAILED)
    die("mmap");
  runtime_signal = static_cast<volatile int*>(shared);
  pid_t init = ::fork();
  if (init < 0)
    die("fork init");
  if (init == 0)
    run_init(*spec);
  ::close(jail_control_fd);
  report("pid " + std::to_string(init));
  int status = 0;
  while (::waitpid(init, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && *runtime_signal != 0)
    report("signal " + std::to_string(*runtime_signal));
  else if (WIFEXITED(status))
    report("exit " + std::to_string(WEXITSTATUS(status)));
  else
    report("signal " + std::to_string(WTERMSIG(status)));
  return 0;
}
