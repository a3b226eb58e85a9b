# A Python tenant for the sandbox escape suite (tests/vmm/jail_test.cpp).
#
# Runs inside a real nimbus-jail sandbox with /usr/bin/python3 and prints one
# line per attempt, "<name> <result>" (result "ok" or the errno name), the same
# format as probe.c. Covers SBX-1 shape, a representative SBX-3 subset through
# ctypes, the SBX-4 file system and /proc checks, and the environment.
import ctypes
import errno
import os
import sys

if os.geteuid() == 0:
    # Several attempts write to / and /usr: never run them as root outside a
    # sandbox.
    print("probe refuses to run as root")
    sys.exit(3)

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def say(name, value):
    print(f"{name} {value}", flush=True)


def errname(e):
    return errno.errorcode.get(e, f"E{e}")


def c_result(name, rc):
    say(name, "ok" if rc >= 0 else errname(ctypes.get_errno()))


def os_result(name, fn):
    try:
        r = fn()
        if isinstance(r, int) and r > 2:
            try:
                os.close(r)
            except OSError:
                pass
        say(name, "ok")
    except OSError as e:
        say(name, errname(e.errno))


say("probe", "python")

# SBX-1 shape.
status = {}
with open("/proc/self/status") as f:
    for line in f:
        key, _, value = line.partition(":")
        status[key] = value.strip()
for key in ("NoNewPrivs", "Seccomp", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
    say(key, status.get(key, "missing"))
say("uid", " ".join(str(x) for x in os.getresuid()))
say("gid", " ".join(str(x) for x in os.getresgid()))
say("groups", len(os.getgroups()))
host_ns = dict(item.split("=", 1) for item in os.environ.get("HOST_NS", "").split() if "=" in item)
for name in ("pid", "mnt", "net", "ipc", "uts", "cgroup"):
    try:
        link = os.readlink(f"/proc/self/ns/{name}")
    except OSError as e:
        say(f"ns_{name}", errname(e.errno))
        continue
    host = host_ns.get(name)
    verdict = "unknown" if not host else ("SAME" if host == link else "differs")
    say(f"ns_{name}", f"{verdict} {link}")
os_result("write_root", lambda: os.open("/nimbus-probe", os.O_WRONLY | os.O_CREAT, 0o644))
os_result("write_usr", lambda: os.open("/usr/nimbus-probe", os.O_WRONLY | os.O_CREAT, 0o644))
os_result("write_var_task",
          lambda: os.open("/var/task/nimbus-probe", os.O_WRONLY | os.O_CREAT, 0o644))
try:
    with open("/tmp/nimbus-probe", "w") as f:
        f.write("hello\n")
    os.unlink("/tmp/nimbus-probe")
    say("write_tmp", "ok")
except OSError as e:
    say("write_tmp", errname(e.errno))
say("cwd", os.getcwd())
say("env", " ".join(sorted(os.environ)))


def open_fds():
    fds = []
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            pass  # the directory descriptor listdir used, now closed
    return sorted(fds)


say("fds", ",".join(str(fd) for fd in open_fds()))

# SBX-3 subset through ctypes.
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
SYS_keyctl, SYS_bpf, SYS_setns = 250, 321, 308  # x86_64
KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING = 0, -3
c_result("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
c_result("umount2", libc.umount2(b"/var/task", 2))
c_result("chroot", libc.chroot(b"/tmp"))
c_result("unshare_user", libc.unshare(CLONE_NEWUSER))
c_result("unshare_ns", libc.unshare(CLONE_NEWNS))
c_result("unshare_net", libc.unshare(CLONE_NEWNET))
ns_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
c_result("setns", libc.setns(ns_fd, CLONE_NEWNET))
os.close(ns_fd)
c_result("ptrace_traceme", libc.ptrace(0, 0, None, None))
c_result("ptrace_attach_1", libc.ptrace(16, 1, None, None))
c_result("keyctl", libc.syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0))
attr = (ctypes.c_uint32 * 32)(2, 4, 4, 1)  # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
c_result("bpf", libc.syscall(SYS_bpf, 0, ctypes.byref(attr), ctypes.sizeof(attr)))
# Not too broad: subprocess (fork/exec or posix_spawn) and threads work.
import subprocess
import threading

try:
    out = subprocess.run(["/bin/echo", "child"], capture_output=True, timeout=10).stdout
    say("subprocess", "ok" if out == b"child\n" else "bad-output")
except OSError as e:
    say("subprocess", errname(e.errno))
box = []
t = threading.Thread(target=lambda: box.append(42))
t.start()
t.join()
say("thread", "ok" if box == [42] else "bad-value")

# SBX-4 subset.
say("proc_pids", ",".join(sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int)))
say("pid", os.getpid())
os_result("proc_sys_hostname_w", lambda: os.open("/proc/sys/kernel/hostname", os.O_WRONLY))
os_result("proc_1_root", lambda: os.listdir("/proc/1/root"))
os_result("sys_exists", lambda: os.stat("/sys"))
say("realpath_dotdot", os.path.realpath("/var/task/../../.."))
os_result("symlink_out", lambda: os.open("/var/task/hostlink", os.O_RDONLY))
say("end", "")
