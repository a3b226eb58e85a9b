/* A tenant program for the sandbox escape suite (tests/vmm/jail_test.cpp).
 *
 * It runs inside a real nimbus-jail sandbox as the unprivileged user and tries
 * to get out. Every attempt prints one line, "<name> <result>", where result
 * is "ok" if the call succeeded or the errno name (EPERM, ENOSYS, ...) if it
 * failed; informational lines print "<name> <value...>". The test parses the
 * lines and decides what is expected; the probe judges nothing itself.
 *
 * Usage: probe <mode> [args]; modes:
 *   shape       SBX-1: NoNewPrivs/Seccomp/capabilities, ids, namespaces
 *               (compared with $HOST_NS), root read-only, /tmp writable,
 *               environment variable names, open descriptors
 *   syscalls    SBX-3: every denied call, plus fork, threads, posix_spawn
 *   fs          SBX-4: /proc, /sys, the code (the working directory), "..",
 *               symlinks
 *   image       image-root mode: what the image's root looks like inside
 *   net         SBX-5: connections to metadata, gateway, host and neighbour
 *               ports ($HOST_PORT, $NEIGHBOUR_PORT), and the runtime API
 *               port bound for us ($API_PORT)
 *   forkbomb    SBX-2: forks until fork fails
 *   membomb MB  SBX-2/LAM-6: allocates and touches MB megabytes
 *   tmpfill     SBX-2: writes /tmp until a write fails
 *   fdbomb      SBX-2: opens descriptors until open fails
 *   spin        CPU hog on two threads, forever
 *   work        a small computation, then "work done"
 *   sleepfork   SBX-6: forks a sleeping child, then sleeps
 *   nap MS      sleeps MS milliseconds, then "nap done"
 *
 * Started as "true" (argv[0]'s last component), it exits 0 at once: in a test
 * image without a libc it stands in for /bin/true.
 *
 * Potentially harmful calls use arguments that would do nothing even if the
 * call were allowed and privileged (bad magic, nonexistent paths, NULLs).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

extern char** environ;

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef KCMP_FILE
#define KCMP_FILE 0
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

static const char* errname(int e) {
  switch (e) {
  case EPERM: return "EPERM";
  case ENOENT: return "ENOENT";
  case ESRCH: return "ESRCH";
  case EINTR: return "EINTR";
  case EIO: return "EIO";
  case E2BIG: return "E2BIG";
  case EBADF: return "EBADF";
  case ECHILD: return "ECHILD";
  case EAGAIN: return "EAGAIN";
  case ENOMEM: return "ENOMEM";
  case EACCES: return "EACCES";
  case EFAULT: return "EFAULT";
  case EBUSY: return "EBUSY";
  case EEXIST: return "EEXIST";
  case ENOTDIR: return "ENOTDIR";
  case EISDIR: return "EISDIR";
  case EINVAL: return "EINVAL";
  case EMFILE: return "EMFILE";
  case ENFILE: return "ENFILE";
  case ENOTTY: return "ENOTTY";
  case EFBIG: return "EFBIG";
  case ENOSPC: return "ENOSPC";
  case EROFS: return "EROFS";
  case ENOSYS: return "ENOSYS";
  case ENOKEY: return "ENOKEY";
  case EOPNOTSUPP: return "EOPNOTSUPP";
  case EAFNOSUPPORT: return "EAFNOSUPPORT";
  case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
  case ENETUNREACH: return "ENETUNREACH";
  case EHOSTUNREACH: return "EHOSTUNREACH";
  case ECONNREFUSED: return "ECONNREFUSED";
  case ETIMEDOUT: return "ETIMEDOUT";
  case EINPROGRESS: return "EINPROGRESS";
  case ETXTBSY: return "ETXTBSY";
  default: {
    static char buf[32];
    snprintf(buf, sizeof buf, "E%d", e);
    return buf;
  }
  }
}

/* Prints "<name> ok" for rc >= 0, else "<name> <errno name>". */
static void result(const char* name, long rc) {
  if (rc >= 0)
    printf("%s ok\n", name);
  else
    printf("%s %s\n", name, errname(errno));
}

/* ---------------------------------------------------------------- shape */

static void status_field(const char* key) {
  FILE* f = fopen("/proc/self/status", "r");
  char line[512];
  size_t n = strlen(key);
  if (!f) {
    printf("%s %s\n", key, errname(errno));
    return;
  }
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, n) == 0 && line[n] == ':') {
      char* v = line + n + 1;
      while (*v == ' ' || *v == '\t')
        ++v;
      v[strcspn(v, "\n")] = 0;
      printf("%s %s\n", key, v);
      break;
    }
  fclose(f);
}

/* "pid:[4026531836]"-style values of the host, from $HOST_NS
 * ("pid=pid:[...] mnt=mnt:[...] ..."). */
static const char* host_ns(const char* name, char* out, size_t size) {
  const char* all = getenv("HOST_NS");
  char key[32];
  snprintf(key, sizeof key, "%s=", name);
  out[0] = 0;
  if (!all)
    return out;
  const char* p = strstr(all, key);
  if (!p)
    return out;
  p += strlen(key);
  size_t len = strcspn(p, " ");
  if (len >= size)
    len = size - 1;
  memcpy(out, p, len);
  out[len] = 0;
  return out;
}

static void list_fds(void) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) {
    printf("fds %s\n", errname(errno));
    return;
  }
  int self = dirfd(d);
  int fds[256];
  int n = 0;
  struct dirent* e;
  while ((e = readdir(d)) && n < 256) {
    if (e->d_name[0] == '.')
      continue;
    int fd = atoi(e->d_name);
    if (fd != self)
      fds[n++] = fd;
  }
  closedir(d);
  for (int i = 1; i < n; ++i) /* insertion sort, tiny n */
    for (int j = i; j > 0 && fds[j - 1] > fds[j]; --j) {
      int t = fds[j];
      fds[j] = fds[j - 1];
      fds[j - 1] = t;
    }
  printf("fds ");
  for (int i = 0; i < n; ++i)
    printf(i ? ",%d" : "%d", fds[i]);
  printf("\n");
}

static int mode_shape(void) {
  status_field("NoNewPrivs");
  status_field("Seccomp");
  status_field("CapInh");
  status_field("CapPrm");
  status_field("CapEff");
  status_field("CapBnd");
  status_field("CapAmb");
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  getresuid(&ru, &eu, &su);
  getresgid(&rg, &eg, &sg);
  printf("uid %u %u %u\n", ru, eu, su);
  printf("gid %u %u %u\n", rg, eg, sg);
  printf("groups %d\n", getgroups(0, NULL));
  printf("pid %d\n", (int)getpid());
  const char* names[] = {"pid", "mnt", "net", "ipc", "uts", "cgroup"};
  for (size_t i = 0; i < sizeof names / sizeof *names; ++i) {
    char path[64], link[128] = {0}, host[128];
    snprintf(path, sizeof path, "/proc/self/ns/%s", names[i]);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0) {
      printf("ns_%s %s\n", names[i], errname(errno));
      continue;
    }
    host_ns(names[i], host, sizeof host);
    printf("ns_%s %s %s\n", names[i], !host[0] ? "unknown" : strcmp(host, link) ? "differs" : "SAME",
           link);
  }
  result("write_root", open("/nimbus-probe", O_WRONLY | O_CREAT, 0644));
  result("mkdir_root", mkdir("/nimbus-probe-dir", 0755));
  result("write_usr", open("/usr/nimbus-probe", O_WRONLY | O_CREAT, 0644));
  result("write_etc", open("/etc/nimbus-probe", O_WRONLY | O_CREAT, 0644));
  result("write_var_task", open("/var/task/nimbus-probe", O_WRONLY | O_CREAT, 0644));
  {
    int fd = open("/tmp/nimbus-probe", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    long rc = fd < 0 ? -1 : write(fd, "hello\n", 6);
    result("write_tmp", rc == 6 ? 0 : -1);
    if (fd >= 0)
      close(fd);
    unlink("/tmp/nimbus-probe");
  }
  char cwd[256] = {0};
  printf("cwd %s\n", getcwd(cwd, sizeof cwd) ? cwd : "?");
  /* Environment variable names, sorted by the test. */
  printf("env");
  for (char** e = environ; *e; ++e)
    printf(" %.*s", (int)strcspn(*e, "="), *e);
  printf("\n");
  list_fds();
  return 0;
}

/* ------------------------------------------------------------- syscalls */

static void* thread_main(void* arg) {
  *(int*)arg = 42;
  return arg;
}

/* clone(2) as a raw syscall: with stack NULL it behaves like fork. */
static void try_clone(const char* name, unsigned long flags) {
  long rc = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
  if (rc == 0)
    syscall(SYS_exit_group, 0);
  int saved = errno;
  if (rc > 0)
    waitpid((pid_t)rc, NULL, 0);
  errno = saved;
  result(name, rc);
}

/* Runs one attempt in a child, which prints its own result; if the child is
 * killed instead (seccomp's SIGSYS), prints "<name> killed:<signal>". */
static void try_in_child(const char* name, long (*attempt)(void)) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    result(name, attempt());
    fflush(stdout);
    _exit(0);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid)
    printf("%s fork-failed\n", name);
  else if (WIFSIGNALED(status))
    printf("%s killed:%s\n", name, WTERMSIG(status) == SIGSYS ? "SIGSYS" : "other");
}

#if defined(__x86_64__)
/* unshare(CLONE_NEWUSER) through the i386 ABI (int $0x80; i386 nr 310). */
static long i386_unshare(void) {
  long ret;
  __asm__ volatile("int $0x80" : "=a"(ret) : "a"(310L), "b"((long)CLONE_NEWUSER) : "memory");
  if (ret < 0 && ret > -4096) {
    errno = (int)-ret;
    return -1;
  }
  return ret;
}
/* unshare(CLONE_NEWUSER) through the x32 ABI (x86_64 nr | 0x40000000). */
static long x32_unshare(void) {
  return syscall(0x40000000L | SYS_unshare, (long)CLONE_NEWUSER);
}
#endif

static int mode_syscalls(void) {
  char tmp[] = "/tmp";
  /* Mount table and root. */
  result("mount", mount("none", tmp, "tmpfs", 0, NULL));
  result("mount_bind", mount("/tmp", "/var/task", NULL, MS_BIND, NULL));
  result("mount_remount_rw", mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL));
  result("umount2", umount2("/var/task", MNT_DETACH));
  result("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
  result("chroot", chroot("/tmp"));
#ifdef SYS_fsopen
  result("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
#endif
#ifdef SYS_open_tree
  result("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/tmp", 1 /* OPEN_TREE_CLONE */));
#endif
#ifdef SYS_move_mount
  result("move_mount", syscall(SYS_move_mount, -1, "", AT_FDCWD, "/tmp", 0));
#endif
#ifdef SYS_mount_setattr
  result("mount_setattr", syscall(SYS_mount_setattr, AT_FDCWD, "/", 0, NULL, 0));
#endif
  /* Namespaces. */
  result("unshare_user", unshare(CLONE_NEWUSER));
  result("unshare_ns", unshare(CLONE_NEWNS));
  result("unshare_uts", unshare(CLONE_NEWUTS));
  result("unshare_ipc", unshare(CLONE_NEWIPC));
  result("unshare_net", unshare(CLONE_NEWNET));
  result("unshare_pid", unshare(CLONE_NEWPID));
  result("unshare_cgroup", unshare(CLONE_NEWCGROUP));
  result("unshare_time", unshare(CLONE_NEWTIME));
  result("unshare_files", unshare(CLONE_FILES)); /* harmless, also denied */
  {
    int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    result("setns", setns(fd, CLONE_NEWNET));
    if (fd >= 0)
      close(fd);
    fd = open("/proc/1/ns/mnt", O_RDONLY | O_CLOEXEC);
    result("open_init_ns", fd);
    if (fd >= 0)
      close(fd);
  }
  try_clone("clone_newns", CLONE_NEWNS);
  try_clone("clone_newuser", CLONE_NEWUSER);
  try_clone("clone_newpid", CLONE_NEWPID);
  try_clone("clone_newnet", CLONE_NEWNET);
  try_clone("clone_newuts", CLONE_NEWUTS);
  try_clone("clone_newipc", CLONE_NEWIPC);
  try_clone("clone_newcgroup", CLONE_NEWCGROUP);
  try_clone("clone_newuser_highbits", CLONE_NEWUSER | (1UL << 40));
  {
    /* clone3 with a plain fork-like argument: the filter cannot read the
     * flags, so the call must fail as a whole. */
    uint64_t args[11] = {0};
    args[4] = SIGCHLD; /* exit_signal */
    long rc = syscall(SYS_clone3, args, 88);
    if (rc == 0)
      syscall(SYS_exit_group, 0);
    int saved = errno;
    if (rc > 0)
      waitpid((pid_t)rc, NULL, 0);
    errno = saved;
    result("clone3", rc);
    args[0] = CLONE_NEWUSER;
    rc = syscall(SYS_clone3, args, 88);
    if (rc == 0)
      syscall(SYS_exit_group, 0);
    saved = errno;
    if (rc > 0)
      waitpid((pid_t)rc, NULL, 0);
    errno = saved;
    result("clone3_newuser", rc);
  }
#if defined(__x86_64__)
  /* Other ABIs of the same CPU: the filter is for x86_64 only. */
  try_in_child("abi_i386_unshare", i386_unshare);
  try_in_child("abi_x32_unshare", x32_unshare);
#endif
  /* Tracing and other processes' memory. */
  result("ptrace_traceme", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
  result("ptrace_attach_1", ptrace(PTRACE_ATTACH, 1, NULL, NULL));
  result("ptrace_seize_1", ptrace(PTRACE_SEIZE, 1, NULL, NULL));
  {
    char src[16] = "secret", dst[16] = {0};
    struct iovec local = {dst, sizeof dst}, remote = {src, sizeof src};
    result("process_vm_readv", syscall(SYS_process_vm_readv, getpid(), &local, 1, &remote, 1, 0));
    result("process_vm_readv_1", syscall(SYS_process_vm_readv, 1, &local, 1, &remote, 1, 0));
    result("process_vm_writev", syscall(SYS_process_vm_writev, getpid(), &remote, 1, &local, 1, 0));
  }
  result("kcmp", syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, 1, 1));
#ifdef SYS_pidfd_open
  {
    long pidfd = syscall(SYS_pidfd_open, getpid(), 0);
    result("pidfd_getfd", pidfd < 0 ? -1 : syscall(SYS_pidfd_getfd, (int)pidfd, 1, 0));
    if (pidfd >= 0)
      close((int)pidfd);
  }
#endif
  /* Keyrings. */
  result("add_key", syscall(SYS_add_key, "user", "nimbus-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING));
  result("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
  result("request_key", syscall(SYS_request_key, "user", "nimbus-nonexistent", NULL, 0));
  /* Large kernel attack surfaces. */
  {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    result("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
  }
  {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.size = sizeof attr;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.disabled = 1;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    result("perf_event_open", syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
  }
  result("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY));
  {
    char params[120];
    memset(params, 0, sizeof params);
    result("io_uring_setup", syscall(SYS_io_uring_setup, 8, params));
    result("io_uring_enter", syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0));
    result("io_uring_register", syscall(SYS_io_uring_register, -1, 0, NULL, 0));
  }
  {
    struct {
      unsigned int handle_bytes;
      int handle_type;
      unsigned char f_handle[128];
    } h;
    memset(&h, 0, sizeof h);
    h.handle_bytes = 128;
    int mount_id = 0;
    result("name_to_handle_at", syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &h, &mount_id, 0));
    result("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, &h, O_RDONLY));
  }
  /* Kernel replacement and modules. */
  result("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL));
  result("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0xdead0000UL));
  result("init_module", syscall(SYS_init_module, NULL, 0, ""));
  result("finit_module", syscall(SYS_finit_module, -1, "", 0));
  result("delete_module", syscall(SYS_delete_module, "nimbus_nonexistent", O_NONBLOCK));
  /* Machine-wide state (arguments that would change nothing). */
  result("reboot", syscall(SYS_reboot, 0, 0, 0, NULL));
  result("swapon", syscall(SYS_swapon, "/nonexistent-swap", 0));
  result("swapoff", syscall(SYS_swapoff, "/nonexistent-swap"));
  result("acct", syscall(SYS_acct, "/nonexistent/acct"));
  result("settimeofday", syscall(SYS_settimeofday, NULL, NULL));
  {
    struct timespec ts = {0, 0};
    result("clock_settime", syscall(SYS_clock_settime, CLOCK_MONOTONIC, &ts));
  }
  result("iopl", syscall(SYS_iopl, 0));
  result("ioperm", syscall(SYS_ioperm, 0x80, 1, 0));
  /* Terminal injection (fd 0 is /dev/null: without the filter ENOTTY). */
  {
    char c = 'x';
    result("ioctl_tiocsti", syscall(SYS_ioctl, 0, (unsigned long)TIOCSTI, &c));
    result("ioctl_tiocsti_highbits",
           syscall(SYS_ioctl, 0, (unsigned long)TIOCSTI | (1UL << 32), &c));
    result("ioctl_tiocsti_fd1", syscall(SYS_ioctl, 1, (unsigned long)TIOCSTI, &c));
  }
  /* The filter must not be too broad. */
  {
    pid_t pid = fork();
    if (pid == 0)
      _exit(7);
    int status = 0;
    if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status)
        && WEXITSTATUS(status) == 7)
      printf("fork ok\n");
    else
      printf("fork %s\n", pid < 0 ? errname(errno) : "bad-status");
  }
  {
    pthread_t t;
    int value = 0;
    int rc = pthread_create(&t, NULL, thread_main, &value);
    if (rc == 0)
      rc = pthread_join(t, NULL);
    if (rc == 0 && value == 42)
      printf("pthread ok\n");
    else
      printf("pthread %s\n", rc ? errname(rc) : "bad-value");
  }
  {
    pid_t pid;
    char* argv[] = {"/bin/true", NULL};
    char* envp[] = {NULL};
    int rc = posix_spawn(&pid, "/bin/true", NULL, NULL, argv, envp);
    int status = 0;
    if (rc == 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status)
        && WEXITSTATUS(status) == 0)
      printf("posix_spawn ok\n");
    else
      printf("posix_spawn %s\n", rc ? errname(rc) : "bad-status");
  }
  {
    int fds[2];
    result("pipe", pipe(fds));
    struct timespec ts;
    result("clock_gettime", clock_gettime(CLOCK_REALTIME, &ts));
    void* p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    result("mmap", p == MAP_FAILED ? -1 : 0);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    result("socket_tcp", s);
    struct termios t;
    result("ioctl_tcgets_devnull", ioctl(0, TCGETS, &t)); /* ENOTTY, not EPERM */
  }
  return 0;
}

/* ------------------------------------------------------------------- fs */

static int mode_fs(void) {
  /* Only the sandbox's own processes are visible. */
  DIR* d = opendir("/proc");
  printf("proc_pids");
  if (d) {
    struct dirent* e;
    int first = 1;
    while ((e = readdir(d)))
      if (e->d_name[0] >= '0' && e->d_name[0] <= '9') {
        printf(first ? " %s" : ",%s", e->d_name);
        first = 0;
      }
    closedir(d);
  }
  printf("\n");
  printf("pid %d\n", (int)getpid());
  result("proc_sys_hostname_w", open("/proc/sys/kernel/hostname", O_WRONLY));
  result("proc_sys_core_pattern_w", open("/proc/sys/kernel/core_pattern", O_WRONLY));
  result("proc_sysrq_trigger_w", open("/proc/sysrq-trigger", O_WRONLY));
  result("proc_1_root", open("/proc/1/root/.", O_RDONLY | O_DIRECTORY));
  result("proc_1_environ", open("/proc/1/environ", O_RDONLY));
  result("proc_1_mem", open("/proc/1/mem", O_RDONLY));
  result("proc_kcore", open("/proc/kcore", O_RDONLY));
  {
    struct stat st;
    result("sys_exists", stat("/sys", &st));
    result("sys_kernel_w", open("/sys/kernel/uevent_helper", O_WRONLY));
    result("sys_fs_cgroup", stat("/sys/fs/cgroup", &st));
  }
  {
    /* setuid binaries of the host's /usr must not raise privileges. */
    struct statvfs v;
    int ok = statvfs("/usr", &v) == 0;
    if (ok)
      printf("usr_flags %s%s\n", (v.f_flag & ST_RDONLY) ? "ro" : "rw",
             (v.f_flag & ST_NOSUID) ? ",nosuid" : "");
    else
      printf("usr_flags %s\n", errname(errno));
    ok = statvfs("/tmp", &v) == 0;
    printf("tmp_flags %s%s%s\n", ok && (v.f_flag & ST_RDONLY) ? "ro" : "rw",
           ok && (v.f_flag & ST_NOSUID) ? ",nosuid" : "", ok && (v.f_flag & ST_NODEV) ? ",nodev" : "");
  }
  /* The code is the working directory (/var/task in zip mode). */
  result("write_code", open("nimbus-probe", O_WRONLY | O_CREAT, 0644));
  /* (probe.py: the probe itself is busy as a running executable.) */
  result("write_code_existing", open("probe.py", O_WRONLY));
  result("chmod_code", chmod(".", 0777));
  result("write_root", open("/nimbus-probe", O_WRONLY | O_CREAT, 0644));
  result("symlink_root", symlink("/", "/escape"));
  result("write_dev", open("/dev/nimbus-probe", O_WRONLY | O_CREAT, 0644));
  result("mknod_tmp", mknod("/tmp/nimbus-sda", S_IFBLK | 0600, makedev(8, 0)));
  {
    char buf[4096];
    char* r = realpath("../../..", buf);
    printf("realpath_dotdot %s\n", r ? r : errname(errno));
    r = realpath("../../../../../../..", buf);
    printf("realpath_dotdot_deep %s\n", r ? r : errname(errno));
    int fd = open(".", O_RDONLY | O_DIRECTORY);
    int up = fd < 0 ? -1 : openat(fd, "../../../../..", O_RDONLY | O_DIRECTORY);
    struct stat a, b;
    int same = up >= 0 && fstat(up, &a) == 0 && stat("/", &b) == 0 && a.st_dev == b.st_dev
               && a.st_ino == b.st_ino;
    printf("openat_dotdot_is_root %s\n", same ? "yes" : "no");
    if (fd >= 0)
      close(fd);
    if (up >= 0)
      close(up);
  }
  /* A symlink shipped in the code pointing at a host path (placed by the
   * test) resolves inside the sandbox, where that path does not exist. */
  result("symlink_out", open("hostlink", O_RDONLY));
  result("symlink_out_dir", open("hostdir/secret", O_RDONLY));
  {
    /* /etc holds only the sandbox's minimal files. */
    struct stat st;
    result("etc_shadow", stat("/etc/shadow", &st));
    result("etc_passwd", stat("/etc/passwd", &st));
  }
  return 0;
}

/* ---------------------------------------------------------------- image */

/* First line of a file, or its errno name. */
static void first_line(const char* name, const char* path) {
  FILE* f = fopen(path, "r");
  char line[256] = {0};
  if (!f) {
    printf("%s %s\n", name, errname(errno));
    return;
  }
  if (!fgets(line, sizeof line, f))
    line[0] = 0;
  fclose(f);
  line[strcspn(line, "\n")] = 0;
  printf("%s %s\n", name, line);
}

static void exists(const char* name, const char* path) {
  struct stat st;
  result(name, lstat(path, &st));
}

/* The test image (tests/vmm/jail_test.cpp) has /bin/sandbox_probe and
 * /bin/true, sbin -> bin, /app, /image-marker, and /tmp/image-file,
 * /dev/image-file and /proc/image-file that the sandbox must hide. */
static int mode_image(const char* argv0) {
  char buf[4096] = {0};
  printf("argv0 %s\n", argv0);
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  printf("exe %s\n", n < 0 ? errname(errno) : buf);
  printf("cwd %s\n", getcwd(buf, sizeof buf) ? buf : errname(errno));
  first_line("marker", "/image-marker");
  n = readlink("/sbin", buf, sizeof buf - 1);
  buf[n < 0 ? 0 : n] = 0;
  printf("sbin_link %s\n", n < 0 ? errname(errno) : buf);
  exists("sbin_probe", "/sbin/sandbox_probe");
  /* Read-only everywhere but /tmp; the image files are owned by the sandbox
   * user, so only the mount can refuse. */
  result("write_cwd", open("nimbus-probe", O_WRONLY | O_CREAT, 0644));
  result("write_app", open("/app/nimbus-probe", O_WRONLY | O_CREAT, 0644));
  result("write_app_existing", open("/app/probe.py", O_WRONLY));
  result("write_bin", open("/bin/nimbus-probe", O_WRONLY | O_CREAT, 0644));
  result("write_bin_existing", open("/bin/true", O_WRONLY));
  result("write_marker", open("/image-marker", O_WRONLY));
  result("write_root", open("/nimbus-probe", O_WRONLY | O_CREAT, 0644));
  result("mkdir_root", mkdir("/nimbus-probe-dir", 0755));
  result("symlink_root", symlink("/", "/escape"));
  result("write_etc", open("/etc/nimbus-probe", O_WRONLY | O_CREAT, 0644));
  {
    int fd = open("/tmp/nimbus-probe", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    long rc = fd < 0 ? -1 : write(fd, "hello\n", 6);
    result("write_tmp", rc == 6 ? 0 : -1);
    if (fd >= 0)
      close(fd);
    unlink("/tmp/nimbus-probe");
  }
  /* Nothing of the host, none of zip mode's directories. */
  exists("usr", "/usr");
  exists("var_task", "/var/task");
  exists("var_runtime", "/var/runtime");
  exists("sys", "/sys");
  /* The image's own /tmp, /dev and /proc are replaced. */
  exists("image_tmp_file", "/tmp/image-file");
  exists("image_dev_file", "/dev/image-file");
  exists("image_proc_file", "/proc/image-file");
  {
    struct stat st;
    printf("dev_null %s\n", stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode) ? "chr" : "bad");
    printf("proc_self %s\n", stat("/proc/self/status", &st) == 0 ? "ok" : "missing");
  }
  /* /etc: the image's, or the minimal one with a user for our uid. */
  first_line("etc_hosts", "/etc/hosts");
  {
    FILE* f = fopen("/etc/passwd", "r");
    char line[512], want[32];
    int found = 0;
    snprintf(want, sizeof want, ":x:%u:", (unsigned)getuid());
    while (f && fgets(line, sizeof line, f))
      found = found || strstr(line, want) != NULL;
    if (f)
      fclose(f);
    printf("etc_passwd_self %s\n", found ? "yes" : "no");
  }
  {
    struct statvfs v;
    const char* paths[][2] = {{"root_flags", "/"}, {"app_flags", "/app"}, {"tmp_flags", "/tmp"}};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; ++i) {
      if (statvfs(paths[i][1], &v) != 0)
        printf("%s %s\n", paths[i][0], errname(errno));
      else
        printf("%s %s%s%s\n", paths[i][0], (v.f_flag & ST_RDONLY) ? "ro" : "rw",
               (v.f_flag & ST_NOSUID) ? ",nosuid" : "", (v.f_flag & ST_NODEV) ? ",nodev" : "");
    }
  }
  printf("path %s\n", getenv("PATH") ? getenv("PATH") : "unset");
  return 0;
}

/* ------------------------------------------------------------------ net */

static void try_connect(const char* name, const char* ip, int port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    result(name, -1);
    return;
  }
  struct timeval tv = {2, 0};
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, ip, &sa.sin_addr);
  long rc = connect(s, (struct sockaddr*)&sa, sizeof sa);
  int saved = errno;
  close(s);
  errno = saved;
  result(name, rc);
}

static int mode_net(void) {
  try_connect("connect_metadata", "169.254.169.254", 80);
  try_connect("connect_gateway", "10.0.2.2", 80);
  try_connect("connect_public", "1.1.1.1", 443);
  const char* host_port = getenv("HOST_PORT");
  if (host_port)
    try_connect("connect_host_port", "127.0.0.1", atoi(host_port));
  const char* neighbour_port = getenv("NEIGHBOUR_PORT");
  if (neighbour_port)
    try_connect("connect_neighbour_port", "127.0.0.1", atoi(neighbour_port));
  const char* api_port = getenv("API_PORT");
  if (api_port)
    try_connect("connect_api_port", "127.0.0.1", atoi(api_port));
  {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(53);
    inet_pton(AF_INET, "8.8.8.8", &sa.sin_addr);
    result("udp_dns", s < 0 ? -1 : sendto(s, "x", 1, 0, (struct sockaddr*)&sa, sizeof sa));
    if (s >= 0)
      close(s);
  }
  result("socket_raw", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
  result("socket_packet", socket(AF_PACKET, SOCK_RAW, 0));
  /* virtio vsock ignores network namespaces: a route to the hypervisor. */
  result("socket_vsock", socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  result("socket_vsock_dgram", socket(AF_VSOCK, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  /* The kernel reads the family as an int: bits above 32 are dropped. */
  result("socket_vsock_highbits",
         syscall(SYS_socket, (unsigned long)AF_VSOCK | (1UL << 32), SOCK_STREAM | SOCK_CLOEXEC, 0));
  /* Interfaces: only loopback. */
  {
    FILE* f = fopen("/proc/self/net/dev", "r");
    printf("interfaces");
    if (f) {
      char line[512];
      int n = 0;
      while (fgets(line, sizeof line, f))
        if (++n > 2) {
          char* name = line;
          while (*name == ' ')
            ++name;
          name[strcspn(name, ":")] = 0;
          printf(" %s", name);
        }
      fclose(f);
    }
    printf("\n");
  }
  return 0;
}

/* ---------------------------------------------------------------- bombs */

static int mode_forkbomb(void) {
  int count = 0;
  for (;;) {
    pid_t pid = fork();
    if (pid == 0) {
      pause();
      _exit(0);
    }
    if (pid < 0) {
      printf("forkbomb %s %d\n", errname(errno), count);
      break;
    }
    if (++count > 100000) {
      printf("forkbomb unlimited %d\n", count);
      break;
    }
  }
  /* Children die with the sandbox when we exit. */
  return 0;
}

static int mode_membomb(int mb) {
  printf("membomb start %d\n", mb);
  fflush(stdout);
  size_t chunk = 1 << 20;
  for (int i = 0; i < mb; ++i) {
    char* p = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      printf("membomb %s %d\n", errname(errno), i);
      return 0;
    }
    for (size_t off = 0; off < chunk; off += 4096)
      p[off] = (char)(i + 1);
  }
  printf("membomb survived %d\n", mb);
  return 0;
}

static int mode_tmpfill(void) {
  signal(SIGXFSZ, SIG_IGN); /* RLIMIT_FSIZE: get EFBIG instead of a signal */
  static char block[65536];
  memset(block, 'x', sizeof block);
  unsigned long long total = 0;
  int err = 0;
  /* Several files: the tmpfs size must cap the sum, not only one file. */
  for (int f = 0; f < 64 && !err; ++f) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/fill-%d", f);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      err = errno;
      break;
    }
    for (int i = 0; i < 32; ++i) { /* at most 2 MB per file */
      ssize_t n = write(fd, block, sizeof block);
      if (n < 0) {
        err = errno;
        break;
      }
      total += (unsigned long long)n;
      if (n < (ssize_t)sizeof block) {
        /* a short write precedes the error: the next write reports it */
        continue;
      }
    }
    close(fd);
  }
  printf("tmpfill %s %llu\n", err ? errname(err) : "unlimited", total);
  /* One big file: RLIMIT_FSIZE (= tmp size) or the tmpfs stops it. */
  for (int f = 0; f < 64; ++f) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/fill-%d", f);
    unlink(path);
  }
  int fd = open("/tmp/big", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  total = 0;
  err = 0;
  for (int i = 0; i < 4096 && fd >= 0; ++i) {
    ssize_t n = write(fd, block, sizeof block);
    if (n < 0) {
      err = errno;
      break;
    }
    total += (unsigned long long)n;
  }
  printf("tmpfill_one %s %llu\n", err ? errname(err) : "unlimited", total);
  return 0;
}

static int mode_fdbomb(void) {
  int count = 0;
  for (;;) {
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0) {
      printf("fdbomb %s %d\n", errname(errno), count);
      break;
    }
    if (++count > 1000000) {
      printf("fdbomb unlimited %d\n", count);
      break;
    }
  }
  struct rlimit lim = {1UL << 20, 1UL << 20};
  result("raise_nofile", setrlimit(RLIMIT_NOFILE, &lim));
  return 0;
}

static void* spin_main(void* arg) {
  volatile unsigned long x = 0;
  for (;;)
    x += (unsigned long)arg;
  return NULL;
}

static int mode_spin(void) {
  printf("spin start\n");
  fflush(stdout);
  pthread_t t;
  pthread_create(&t, NULL, spin_main, (void*)1);
  spin_main((void*)2);
  return 0;
}

static int mode_work(void) {
  /* About 20 ms of CPU on an idle core. */
  volatile unsigned long x = 0;
  for (unsigned long i = 0; i < 20000000UL; ++i)
    x += i * i;
  printf("work done\n");
  return 0;
}

static int mode_sleepfork(void) {
  pid_t pid = fork();
  if (pid == 0) {
    for (;;)
      pause();
  }
  printf("sleepfork child %d\n", (int)pid);
  fflush(stdout);
  for (;;)
    pause();
  return 0;
}

/* Per-user kernel limits are shared by every sandbox running as the same
 * uid: takes all inotify instances and holds them (inotify_hog), or tries
 * to get one (inotify). */
static int mode_inotify(int hog) {
  int count = 0;
  for (;;) {
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0) {
      if (hog)
        printf("inotify_hog %s %d\n", errname(errno), count);
      else
        result("inotify", -1);
      break;
    }
    ++count;
    if (!hog) {
      result("inotify", 0);
      break;
    }
  }
  fflush(stdout);
  if (hog)
    for (;;)
      pause();
  return 0;
}

static int mode_nap(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  printf("nap done\n");
  return 0;
}

int main(int argc, char** argv) {
  const char* base = strrchr(argv[0], '/');
  if (!strcmp(base ? base + 1 : argv[0], "true"))
    return 0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char* mode = argc > 1 ? argv[1] : "shape";
  int arg = argc > 2 ? atoi(argv[2]) : 0;
  printf("probe %s\n", mode);
  /* Several attempts write to /, /usr, /etc: never run them as root
   * outside a sandbox. */
  if (geteuid() == 0) {
    printf("probe refuses to run as root\n");
    return 3;
  }
  int rc = 2;
  if (!strcmp(mode, "shape"))
    rc = mode_shape();
  else if (!strcmp(mode, "syscalls"))
    rc = mode_syscalls();
  else if (!strcmp(mode, "fs"))
    rc = mode_fs();
  else if (!strcmp(mode, "net"))
    rc = mode_net();
  else if (!strcmp(mode, "forkbomb"))
    rc = mode_forkbomb();
  else if (!strcmp(mode, "membomb"))
    rc = mode_membomb(arg);
  else if (!strcmp(mode, "tmpfill"))
    rc = mode_tmpfill();
  else if (!strcmp(mode, "fdbomb"))
    rc = mode_fdbomb();
  else if (!strcmp(mode, "spin"))
    rc = mode_spin();
  else if (!strcmp(mode, "work"))
    rc = mode_work();
  else if (!strcmp(mode, "sleepfork"))
    rc = mode_sleepfork();
  else if (!strcmp(mode, "inotify_hog"))
    rc = mode_inotify(1);
  else if (!strcmp(mode, "inotify"))
    rc = mode_inotify(0);
  else if (!strcmp(mode, "image"))
    rc = mode_image(argv[0]);
  else if (!strcmp(mode, "nap"))
    rc = mode_nap(arg);
  else
    printf("unknown mode %s\n", mode);
  printf("end\n");
  return rc;
}
