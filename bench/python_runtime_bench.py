#!/usr/bin/env python3
"""CPU cost of the Python runtime's bootstrap per no-op invocation, old against new.

In one run, on this machine: the bootstrap at OLD_REF (`git show`; default the branch
base, `git merge-base HEAD main`, which on main itself is HEAD: pass a commit then) and
the working tree's runtimes/python/bootstrap.py each serve --invocations no-op
invocations (handler `return event`, event `{}`) from a minimal Runtime API server that
runs in this process. Rounds alternate old and new so that load from other work on
the machine hits both alike.

The server is a single-threaded blocking socket loop, much cheaper than the
bootstrap itself, answering like nimbusd does (the same headers on /next and
202 with `{"status":"OK"}` on POSTs). CPU time is the bootstrap process's own
(/proc/PID/schedstat, nanoseconds, or utime+stime from /proc/PID/stat when
schedstat is missing; the user/system split always from the latter, in clock
ticks), read when its /next number WARMUP+1 arrives and again when /next number
WARMUP+N+1 arrives, so start-up, import and exit are excluded and exactly N
whole cycles (GET /next, handler, POST response) are counted. That last /next
gets 410 Gone, on which the bootstrap exits. Wall time is over the same span,
so invocations/s also depends on this server and on other load; the CPU
microseconds per invocation are the figure to compare.

Prints JSON: per bootstrap the median over rounds (and every round), and the ratios
old/new. Python standard library only; no root.

  python3 bench/python_runtime_bench.py [--invocations 20000] [--rounds 3] [--warmup 500]
                                        [--old-ref REV] [--new PATH] [--python /usr/bin/python3]
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NEW_BOOTSTRAP = os.path.join(ROOT, "runtimes", "python", "bootstrap.py")
NEXT_PATH = b"/2018-06-01/runtime/invocation/next"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid):
    """(total, user, system) CPU seconds the process has used so far.

    total from schedstat (nanoseconds) when there is one; user and system only in clock ticks.
    """
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            total = int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        total = user + system
    return total, user, system


def next_answer(request_id):
    """What nimbusd's Runtime API sends for /next (transport/src/runtime_api.cpp, http_server.cpp)."""
    now = time.time()
    body = b"{}"
    return ("HTTP/1.1 200 OK\r\n"
            "Content-Type: application/json\r\n"
            "Lambda-Runtime-Aws-Request-Id: %s\r\n"
            "Lambda-Runtime-Deadline-Ms: %d\r\n"
            "Lambda-Runtime-Invoked-Function-Arn: %s\r\n"
            "Lambda-Runtime-Trace-Id: Root=1-%08x-%s;Parent=%s;Sampled=0\r\n"
            "x-amzn-RequestId: %s\r\n"
            "Date: %s\r\n"
            "Server: nimbus\r\n"
            "Content-Length: %d\r\n\r\n"
            % (request_id, int(now * 1000) + 3000, ARN, int(now), uuid.uuid4().hex[:24], uuid.uuid4().hex[:16],
               uuid.uuid4(), time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)), len(body))
            ).encode("ascii") + body


POST_ANSWER = (b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nx-amzn-RequestId: "
               + str(uuid.uuid4()).encode() + b"\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: nimbus\r\n"
               b"Content-Length: 15\r\n\r\n{\"status\":\"OK\"}")


def gone_answer():
    body = b'{"errorMessage":"sandbox is shutting down","errorType":"Gone"}'
    return (b"HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\nServer: nimbus\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


class Connection:
    """One accepted runtime connection with a receive buffer."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def read_request(self):
        """(method, path, body) or None at EOF."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        head, self.buf = self.buf[:end], self.buf[end + 4:]
        lines = head.split(b"\r\n")
        method, path, _ = lines[0].split(b" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        body, self.buf = self.buf[:length], self.buf[length:]
        return method, path, body


def run_once(python, bootstrap, task_root, invocations, warmup):
    """Serve one bootstrap process; returns its figures."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(60)  # a bootstrap that dies before connecting must not hang the run
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % listener.getsockname()[1],
        "_HANDLER": "app.handler",
        "LAMBDA_TASK_ROOT": task_root,
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bench",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123456789abcdef0123456789abcdef",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_REGION": "us-east-1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    started = time.monotonic()
    stderr_file = tempfile.TemporaryFile()  # not a pipe: nobody reads it while serving
    proc = subprocess.Popen([python, bootstrap], env=env, cwd=task_root, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=stderr_file)
    nexts = posts = connections = 0
    cpu0 = wall0 = cpu1 = wall1 = None
    conn = None
    try:
        while True:
            if conn is None:
                sock, _ = listener.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn = Connection(sock)
                connections += 1
            req = conn.read_request()
            if req is None:
                conn.sock.close()
                conn = None
                continue
            method, path, _ = req
            if method == b"GET" and path == NEXT_PATH:
                nexts += 1
                if nexts == warmup + 1:
                    cpu0, wall0 = cpu_times(proc.pid), time.monotonic()
                elif nexts == warmup + invocations + 1:
                    cpu1, wall1 = cpu_times(proc.pid), time.monotonic()
                    conn.sock.sendall(gone_answer())
                    break
                conn.sock.sendall(next_answer(str(uuid.uuid4())))
            elif method == b"POST" and path.endswith(b"/response"):
                posts += 1
                conn.sock.sendall(POST_ANSWER)
            else:
                raise RuntimeError("unexpected request %r %r" % (method, path))
    finally:
        if conn is not None:
            conn.sock.close()
        listener.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr_file.seek(0)
        stderr = stderr_file.read()
        stderr_file.close()
    if cpu1 is None:
        raise RuntimeError("bootstrap %s stopped early (status %s): %s"
                           % (bootstrap, proc.returncode, stderr.decode("utf-8", "replace")[-2000:]))
    if posts != warmup + invocations:
        raise RuntimeError("expected %d responses, got %d" % (warmup + invocations, posts))
    cpu, user, system = (b - a for a, b in zip(cpu0, cpu1))
    wall = wall1 - wall0
    return {
        "invocations": invocations,
        "cpu_seconds": round(cpu, 4),
        "cpu_us_per_invocation": round(cpu / invocations * 1e6, 2),
        "user_us_per_invocation": round(user / invocations * 1e6, 1),
        "system_us_per_invocation": round(system / invocations * 1e6, 1),
        "wall_seconds": round(wall, 4),
        "invocations_per_second": round(invocations / wall, 1),
        "connections": connections,
        "process_total_seconds": round(time.monotonic() - started, 3),
    }


def summarize(rounds):
    return {
        "cpu_us_per_invocation": round(statistics.median(r["cpu_us_per_invocation"] for r in rounds), 2),
        "user_us_per_invocation": round(statistics.median(r["user_us_per_invocation"] for r in rounds), 1),
        "system_us_per_invocation": round(statistics.median(r["system_us_per_invocation"] for r in rounds), 1),
        "invocations_per_second": round(statistics.median(r["invocations_per_second"] for r in rounds), 1),
        "rounds": rounds,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each bootstrap, alternating")
    parser.add_argument("--warmup", type=int, default=500, help="invocations before measuring")
    parser.add_argument("--old-ref", help="git revision of the old bootstrap (default: git merge-base HEAD main)")
    parser.add_argument("--new", default=NEW_BOOTSTRAP, help="path of the new bootstrap")
    parser.add_argument("--python", default="/usr/bin/python3")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="nimbus-pybench-")
    try:
        old_dir = os.path.join(tmp, "old")
        task_root = os.path.join(tmp, "task")
        os.makedirs(old_dir)
        os.makedirs(task_root)
        old_bootstrap = os.path.join(old_dir, "bootstrap.py")
        if args.old_ref is None:
            args.old_ref = subprocess.run(["git", "-C", ROOT, "merge-base", "HEAD", "main"], check=True,
                                          capture_output=True, text=True).stdout.strip()
        old_rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.old_ref], check=True,
                                 capture_output=True, text=True).stdout.strip()
        with open(old_bootstrap, "wb") as f:
            f.write(subprocess.run(["git", "-C", ROOT, "show", "%s:runtimes/python/bootstrap.py" % args.old_ref],
                                   check=True, capture_output=True).stdout)
        with open(os.path.join(task_root, "app.py"), "w") as f:
            f.write("def handler(event, context):\n    return event\n")

        loadavg_before = os.getloadavg()
        results = {"old": [], "new": []}
        for _ in range(args.rounds):
            for name, path in (("old", old_bootstrap), ("new", args.new)):
                results[name].append(run_once(args.python, path, task_root, args.invocations, args.warmup))
        old, new = summarize(results["old"]), summarize(results["new"])
        version = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"],
                                 capture_output=True, text=True).stdout.strip()
        report = {
            "benchmark": "python runtime bootstrap, no-op handler",
            "python": "%s %s" % (args.python, version),
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                        "loadavg_before": [round(x, 2) for x in loadavg_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "old": dict(old, source="git show %s:runtimes/python/bootstrap.py" % old_rev),
            "new": dict(new, source=os.path.relpath(args.new, ROOT)),
            "ratio_cpu_old_over_new": round(old["cpu_us_per_invocation"] / new["cpu_us_per_invocation"], 2),
            "ratio_throughput_new_over_old": round(new["invocations_per_second"] / old["invocations_per_second"], 2),
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
