#!/usr/bin/env python3
"""Invoke benchmark: warm throughput and latency through the full HTTP path,
and cold starts measured from HTTP request to response.

In one run, on this machine:
  * nginx returning a static 200 '{}' (the HTTP ceiling of the machine),
  * bench/relay_ceiling.c: a bare epoll relay between wrk and 32 copies of
    the same C runtime (plain processes), the same three HTTP exchanges per
    invoke as nimbusd with nothing else (the ceiling of a warm invoke of
    this runtime on this machine),
  * Nimbus Invoke (POST /2015-03-31/functions/NAME/invocations) of a no-op
    function that returns its event: C `provided` runtime (tests/support/
    test_runtime.c), python3.11 and nodejs20.x,
  * serverless-offline's Lambda Invoke API (npm; the closest peer) with an
    equivalent nodejs20.x function, when npm is reachable (else "skipped"),
all with wrk (2 threads, 32 connections, a 3 s warm-up pass, then a 10 s
measured pass, POST '{}'), and cold starts (configuration change, then one
timed invoke; X-Nimbus-Start and Server-Timing read from the response).
The relay ceiling and Nimbus C are measured in 3 rounds (--rounds) of a
relay pass then a C pass, python, node and serverless-offline in 3 passes
each; their figures are the medians over the passes (nginx: one pass).

nimbusd runs with a temporary config with `[api] authenticate = false`, a
bench-only switch: SigV4 is not verified and every request acts as the first
account, so wrk can send plain POSTs. Never use it outside a benchmark.

Writes OUT/invoke.json and OUT/invoke.png (gnuplot) or OUT/invoke.svg (when
gnuplot is unavailable). Needs root (sandboxes; apt-get for wrk, nginx and
gnuplot-nox when missing). Python standard library only.

  bench/invoke_bench.py [--nimbusd PATH] [--test-runtime PATH] [--out DIR]
                        [--no-serverless] [--no-install] [--keep-temp]
"""

import argparse
import base64
import concurrent.futures
import datetime
import http.client
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
AWS = "/usr/bin/aws"
ACCOUNT = {
    "id": "123456789012",
    "access_key_id": "AKIANIMBUSDEV0000001",
    "secret_access_key": "nimbus-dev-secret-key-change-me",
}
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
FUNCTIONS = {
    # key: (function name, runtime, handler)
    "c": ("bench-c", "provided", "bootstrap"),
    "python": ("bench-python", "python3.11", "app.handler"),
    "node": ("bench-node", "nodejs20.x", "index.handler"),
}
# No-op handlers that return the event. {"sleep_ms": N} holds an environment
# busy (used only to pre-warm as many environments as wrk has connections).
PY_HANDLER = ("import time\n\n"
              "def handler(event, context):\n"
              "    if \"sleep_ms\" in event:\n"
              "        time.sleep(event[\"sleep_ms\"] / 1000)\n"
              "    return event\n")
NODE_HANDLER = ("export const handler = async (event) => {\n"
                "  if (event.sleep_ms) await new Promise((r) => setTimeout(r, event.sleep_ms));\n"
                "  return event;\n"
                "};\n")
# The same for the C test runtime (tests/support/test_runtime.c).
PREWARM_EVENT = {"c": b'{"action":"sleep","ms":1000}', "python": b'{"sleep_ms":1000}',
                 "node": b'{"sleep_ms":1000}'}
SLS_PACKAGES = ["serverless@3", "serverless-offline@13"]
TARGETS = {
    "nimbus_c_rps_min": 15000,
    "nimbus_c_over_serverless_offline_min": 8.0,
    "nimbus_python_rps_min": 4000,
    "nimbus_c_p50_ms_max": 2.0,
    "cold_start_c_p50_ms_max": 10.0,
}


def log(msg):
    print("[invoke_bench] " + msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def rnd(x, nd=3):
    return None if x is None else round(x, nd)


# -- tools ---------------------------------------------------------------------

def ensure_tool(binary, package, allow_install):
    """Returns the path of `binary`, installing Debian's `package` if missing."""
    path = shutil.which(binary)
    if path or not allow_install:
        return path
    log("installing %s with apt-get" % package)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    try:
        if subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
            subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    except (subprocess.TimeoutExpired, OSError) as e:
        log("apt-get failed: %s" % e)
    return shutil.which(binary)


def tool_version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        out = (p.stdout + p.stderr).strip().splitlines()
        return out[0] if out else None
    except (OSError, subprocess.TimeoutExpired):
        return None


# -- processes -----------------------------------------------------------------

class Procs:
    """Every long-running process this script starts, stopped in reverse order."""

    def __init__(self):
        self.items = []  # (name, Popen, stop signal, own process group)

    def add(self, name, proc, sig=signal.SIGTERM, group=False):
        self.items.append((name, proc, sig, group))
        return proc

    def stop(self, proc, timeout=20):
        for i, (name, p, sig, group) in enumerate(self.items):
            if p is proc:
                del self.items[i]
                return stop_process(name, p, sig, group, timeout)
        return None

    def stop_all(self):
        while self.items:
            name, p, sig, group = self.items.pop()
            try:
                stop_process(name, p, sig, group, 20)
            except Exception as e:  # keep stopping the others
                log("stopping %s: %s" % (name, e))


def stop_process(name, p, sig, group, timeout):
    if p.poll() is not None:
        return p.returncode
    try:
        if group:
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        log("%s did not stop within %ss after signal %d: killing it" % (name, timeout, sig))
        try:
            if group:
                os.killpg(p.pid, signal.SIGKILL)
            else:
                p.kill()
        except ProcessLookupError:
            pass
        p.wait(10)
        return "killed"


def wait_for_log(path, pattern, proc, timeout):
    deadline = time.time() + timeout
    rx = re.compile(pattern)
    while time.time() < deadline:
        try:
            with open(path, errors="replace") as f:
                m = rx.search(f.read())
        except FileNotFoundError:
            m = None
        if m:
            return m
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


# -- HTTP ----------------------------------------------------------------------

def http_call(port, method, path, body=None, headers=None, timeout=60):
    """One request on a fresh connection: (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def timed_invoke(port, name, body=b"{}"):
    """Times one invoke from sending the request to the last byte of the answer.

    The TCP connection is opened before the clock starts."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.connect()
        t0 = time.perf_counter()
        conn.request("POST", "/2015-03-31/functions/%s/invocations" % name, body=body,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        ms = (time.perf_counter() - t0) * 1000.0
        return ms, r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def parse_server_timing(value):
    out = {}
    for part in (value or "").split(","):
        m = re.match(r"\s*([\w-]+)\s*;\s*dur=([0-9.]+)", part)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def scrape_metrics(port):
    try:
        status, _, body = http_call(port, "GET", "/metrics", timeout=10)
    except OSError:
        return {}
    if status != 200:
        return {}
    out = {}
    for line in body.decode(errors="replace").splitlines():
        m = re.match(r"^(nimbus_(?:(?:invocations|function_errors|throttles|cold_starts)_total"
                     r"|concurrent_executions))\s+(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


# -- wrk -----------------------------------------------------------------------

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text):
    m = re.match(r"([0-9.]+)(us|ms|s|m|h)$", text.strip())
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_wrk(out):
    r = {"rps": None, "requests": None, "p50_ms": None, "p75_ms": None, "p90_ms": None,
         "p99_ms": None, "latency_avg_ms": None, "latency_max_ms": None, "non_2xx": 0,
         "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([0-9.]+\w+)", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if m:
        r["latency_avg_ms"] = to_ms(m.group(1))
        r["latency_max_ms"] = to_ms(m.group(3))
    for p in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % p, out, re.M)
        if m:
            r["p%s_ms" % p] = to_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        r["non_2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                      map(int, m.groups())))
    return r


def cpu_sample(pid=None):
    """(wall, machine busy jiffies, pid's jiffies, children's CPU seconds)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # minus idle and iowait
    own = None
    if pid:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            own = int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.time(), busy, own, ru.ru_utime + ru.ru_stime, environments_jiffies()


def sandbox_processes(first_uid=10001):
    """Pids (as strings) of the sandboxes' live processes: each environment
    runs as a uid of its own from [worker] first_uid upwards."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat("/proc/" + entry).st_uid >= first_uid:
                pids.append(entry)
        except OSError:
            pass  # ended meanwhile
    return pids


def environments_jiffies(first_uid=10001):
    """CPU of the sandboxes' processes (live processes only)."""
    total = 0
    for pid in sandbox_processes(first_uid):
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def cpu_use(a, b):
    """Cores used between two samples: whole machine, the pid, and wrk."""
    hz = os.sysconf("SC_CLK_TCK")
    wall = b[0] - a[0]
    out = {"machine_busy_cores": rnd((b[1] - a[1]) / hz / wall, 2),
           "wrk_cores": rnd((b[3] - a[3]) / wall, 2)}
    if a[2] is not None and b[2] is not None:
        out["nimbusd_cores"] = rnd((b[2] - a[2]) / hz / wall, 2)
        out["environments_cores"] = rnd((b[4] - a[4]) / hz / wall, 2)
        # Kernel work not charged to a process, and any other process
        # (a build running next to the benchmark shows up here).
        out["unattributed_cores"] = rnd(out["machine_busy_cores"] - out["wrk_cores"]
                                        - out["nimbusd_cores"] - out["environments_cores"], 2)
    return out


def metrics_delta(before, after):
    return {k.replace("nimbus_", ""): after.get(k, 0) - before.get(k, 0) for k in after
            if k.endswith("_total")}


def wait_idle(port, timeout=60):
    """Waits until no invocation is in flight (those of a finished wrk pass)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if scrape_metrics(port).get("nimbus_concurrent_executions", 0) == 0:
            return True
        time.sleep(0.05)
    return False


class Wrk:
    def __init__(self, wrk, tmp, threads, connections, duration, warmup):
        self.wrk = wrk
        self.threads = threads
        self.connections = connections
        self.duration = duration
        self.warmup = warmup
        self.script = os.path.join(tmp, "post.lua")
        with open(self.script, "w") as f:
            f.write('wrk.method = "POST"\n'
                    'wrk.body = "{}"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')

    def run(self, url, seconds):
        cmd = [self.wrk, "-t%d" % self.threads, "-c%d" % self.connections, "-d%ds" % seconds,
               "--timeout", "10s", "--latency", "-s", self.script, url]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        if p.returncode != 0:
            raise RuntimeError("wrk exited with %d: %s" % (p.returncode, p.stderr.strip()))
        return p.stdout

    def single(self, label, url, seconds=3):
        """Latency of one connection, one request at a time (no queueing)."""
        cmd = [self.wrk, "-t1", "-c1", "-d%ds" % seconds, "--timeout", "10s", "--latency",
               "-s", self.script, url]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        if p.returncode != 0:
            raise RuntimeError("wrk exited with %d: %s" % (p.returncode, p.stderr.strip()))
        r = parse_wrk(p.stdout)
        res = {k: r[k] for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "non_2xx")}
        log("  %s, 1 connection: %.0f req/s, p50 %.3f ms" % (label, r["rps"] or 0, r["p50_ms"] or 0))
        return res

    def measure(self, label, url, metrics_port=None, cpu_pid=None):
        """A warm-up pass, then the measured pass; returns the parsed figures."""
        log("wrk %s: %ds warm-up, %ds measured: %s" % (label, self.warmup, self.duration, url))
        m0 = scrape_metrics(metrics_port) if metrics_port else None
        if self.warmup > 0:
            warm = parse_wrk(self.run(url, self.warmup))
        if metrics_port:
            wait_idle(metrics_port)
        before = scrape_metrics(metrics_port) if metrics_port else None
        c0 = cpu_sample(cpu_pid)
        out = self.run(url, self.duration)
        res = parse_wrk(out)
        res["cpu"] = cpu_use(c0, cpu_sample(cpu_pid))
        if self.warmup > 0:
            res["warmup"] = {"rps": warm["rps"], "non_2xx": warm["non_2xx"],
                             "socket_errors": warm["socket_errors"]}
        if metrics_port:
            wait_idle(metrics_port)
            after = scrape_metrics(metrics_port)
            res["nimbus_metrics_delta"] = metrics_delta(before, after)
            if self.warmup > 0:
                res["warmup"]["nimbus_metrics_delta"] = metrics_delta(m0, before)
        res["wrk_output"] = out.strip().splitlines()
        log("  %s: %.0f req/s, p50 %.3f ms, p99 %.3f ms, non-2xx %d, cpu %s" % (
            label, res["rps"] or 0, res["p50_ms"] or 0, res["p99_ms"] or 0, res["non_2xx"],
            res["cpu"]))
        return res


def median_of(values):
    values = sorted(v for v in values if v is not None)
    return statistics.median(values) if values else None


def summarize_passes(passes):
    """One figure for several measured passes of the same target: the median
    of each latency and throughput figure, the sum of the error counts, and
    every pass as measured. `cpu` and the metrics deltas are those of the
    pass whose req/s is the median (the middle one when sorted)."""
    if not passes:
        return {}
    by_rps = sorted(passes, key=lambda p: p.get("rps") or 0)
    middle = by_rps[(len(by_rps) - 1) // 2]
    res = {"rps": rnd(median_of([p.get("rps") for p in passes]), 1)}
    for k in ("p50_ms", "p75_ms", "p90_ms", "p99_ms"):
        res[k] = rnd(median_of([p.get(k) for p in passes]), 3)
    res["non_2xx"] = sum(p.get("non_2xx") or 0 for p in passes)
    res["socket_errors"] = {k: sum((p.get("socket_errors") or {}).get(k, 0) for p in passes)
                            for k in ("connect", "read", "write", "timeout")}
    for k in ("cpu", "nimbus_metrics_delta"):
        if k in middle:
            res[k] = middle[k]
    res["passes"] = passes
    return res


def measure_passes(wrk, label, url, passes, **kwargs):
    """`passes` measured passes of one target in a row, summarized as medians."""
    if passes == 1:
        return summarize_passes([wrk.measure(label, url, **kwargs)])
    return summarize_passes([wrk.measure("%s, pass %d" % (label, i + 1), url, **kwargs)
                             for i in range(passes)])


def c_rounds(wrk, args, procs, nimbus, name):
    """`args.rounds` rounds of a relay ceiling pass then a Nimbus C pass, each
    a full measured pass. Returns the relay and C figures (medians over the
    passes, see summarize_passes), each round's ratio with their median, and
    why there is no relay figure (None when there is one). Without the relay
    the rounds measure C alone."""
    nimbus_url = "http://127.0.0.1:%d/2015-03-31/functions/%s/invocations" % (nimbus.port, name)
    relay_proc, relay_problem = None, None
    if not os.access(args.relay, os.X_OK):
        relay_problem = "%s is not built" % args.relay
    else:
        try:
            relay_proc, relay_port = start_relay(args.relay, args.test_runtime, args.connections,
                                                 procs)
            relay_url = "http://127.0.0.1:%d/2015-03-31/functions/x/invocations" % relay_port
        except Exception as e:
            relay_problem = str(e)
            log("relay ceiling failed: %s" % e)
    relays, cs, rounds = [], [], []
    try:
        for i in range(args.rounds):
            relay = None
            if relay_proc is not None:
                relay = wrk.measure("relay ceiling, round %d" % (i + 1), relay_url)
                relays.append(relay)
            c = wrk.measure("nimbus c, round %d" % (i + 1), nimbus_url, metrics_port=nimbus.port,
                            cpu_pid=nimbus.proc.pid)
            cs.append(c)
            rounds.append({"relay_rps": rnd(relay["rps"], 1) if relay else None,
                           "nimbus_c_rps": rnd(c["rps"], 1), "nimbus_c_p50_ms": c["p50_ms"],
                           "ratio": ratio(c["rps"], relay["rps"]) if relay else None})
    finally:
        if relay_proc is not None:
            procs.stop(relay_proc)
    median = median_of([r["ratio"] for r in rounds])
    log("  rounds: nimbus c %s req/s, relay ceiling %s, ratio per round %s, median %s"
        % ([r["nimbus_c_rps"] for r in rounds], [r["relay_rps"] for r in rounds],
           [r["ratio"] for r in rounds], median))
    summary = {"method": "%d rounds of a relay ceiling pass then a Nimbus C pass, each a %ds wrk "
                        "pass after a %ds warm-up" % (args.rounds, args.duration, args.warmup),
                "rounds": rounds, "median_ratio": rnd(median, 3)}
    return summarize_passes(relays), summarize_passes(cs), summary, relay_problem


# -- nimbusd -------------------------------------------------------------------

class Nimbus:
    def __init__(self, nimbusd, tmp, procs):
        self.nimbusd = nimbusd
        self.procs = procs
        self.dir = os.path.join(tmp, "nimbus")
        os.makedirs(self.dir)
        self.config_path = os.path.join(self.dir, "nimbus.toml")
        self.log_path = os.path.join(self.dir, "nimbusd.log")
        self.config = (
            '[node]\nname = "bench-node"\ndata_dir = "%s"\nregion = "us-east-1"\n'
            '[api]\nlisten = "127.0.0.1:0"\n'
            '# Bench only: no SigV4 verification, every request acts as the first account.\n'
            'authenticate = false\n'
            '[limits]\nconcurrent_executions = 1000\n'
            '[log]\nlevel = "info"\n'
            '[[accounts]]\nid = "%s"\naccess_key_id = "%s"\nsecret_access_key = "%s"\n'
            % (os.path.join(self.dir, "data"), ACCOUNT["id"], ACCOUNT["access_key_id"],
               ACCOUNT["secret_access_key"]))
        with open(self.config_path, "w") as f:
            f.write(self.config)
        self.proc = None
        self.port = None
        self.exit_code = None

    def set_option(self, section, key, value):
        """Sets `key = value` (TOML text) in [section] of the config, before
        start(): after the section's header if there is one, else in a new
        table at the end."""
        header = "[%s]\n" % section
        line = "%s = %s\n" % (key, value)
        if header in self.config:
            self.config = self.config.replace(header, header + line, 1)
        else:
            self.config += header + line
        with open(self.config_path, "w") as f:
            f.write(self.config)

    def start(self):
        self.logf = open(self.log_path, "w")
        self.proc = self.procs.add("nimbusd", subprocess.Popen(
            [self.nimbusd, "--config", self.config_path], stdout=self.logf, stderr=self.logf,
            stdin=subprocess.DEVNULL))
        m = wait_for_log(self.log_path, r"listening on 127\.0\.0\.1:(\d+)", self.proc, 30)
        if not m:
            raise RuntimeError("nimbusd did not start:\n" + self.read_log()[-4000:])
        self.port = int(m.group(1))
        log("nimbusd listening on port %d" % self.port)

    def stop(self):
        if self.proc is not None:
            self.exit_code = self.procs.stop(self.proc, timeout=30)
            self.proc = None
            self.logf.close()
        return self.exit_code

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def aws(self, *args):
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": self.dir,
            "AWS_ACCESS_KEY_ID": ACCOUNT["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": ACCOUNT["secret_access_key"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_PAGER": "",
        }
        cmd = [AWS, "lambda", *args, "--endpoint-url", "http://127.0.0.1:%d" % self.port,
               "--output", "json"]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("aws lambda %s failed: %s" % (args[0], p.stderr.strip()))
        return json.loads(p.stdout) if p.stdout.strip() else None

    def wait_ready(self, name, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, _, body = http_call(self.port, "GET",
                                        "/2015-03-31/functions/%s/configuration" % name)
            if status == 200:
                c = json.loads(body)
                if c.get("State", "Active") == "Active" and \
                        c.get("LastUpdateStatus", "Successful") == "Successful":
                    return c
            time.sleep(0.05)
        raise RuntimeError("function %s did not become Active" % name)

    def create(self, name, runtime, handler, zip_path):
        self.aws("create-function", "--function-name", name, "--runtime", runtime,
                 "--handler", handler, "--role", ROLE, "--zip-file", "fileb://" + zip_path,
                 "--memory-size", "128", "--timeout", "30")
        return self.wait_ready(name)

    def set_variable(self, name, value):
        # Plain HTTP works because authentication is off (the control plane is
        # not what is measured; the aws CLI costs ~0.5 s of start-up a call).
        status, _, body = http_call(
            self.port, "PUT", "/2015-03-31/functions/%s/configuration" % name,
            {"Environment": {"Variables": {"BENCH_REVISION": value}}})
        if status != 200:
            raise RuntimeError("UpdateFunctionConfiguration %s: %d %s" % (name, status, body[:300]))
        self.wait_ready(name)

    def set_code(self, name, zip_bytes):
        """UpdateFunctionCode with a zip (plain HTTP, as set_variable)."""
        status, _, body = http_call(
            self.port, "PUT", "/2015-03-31/functions/%s/code" % name,
            {"ZipFile": base64.b64encode(zip_bytes).decode()})
        if status != 200:
            raise RuntimeError("UpdateFunctionCode %s: %d %s" % (name, status, body[:300]))
        self.wait_ready(name)

    def problems(self, limit=40):
        """warn/error/critical lines of the nimbusd log, and a count per level."""
        counts = {"warn": 0, "error": 0, "critical": 0}
        lines = []
        for line in self.read_log().splitlines():
            m = re.match(r"\S+\s+\[?(warning|warn|error|critical)\]?\s", line)
            if not m:
                continue
            level = "warn" if m.group(1).startswith("warn") else m.group(1)
            counts[level] += 1
            if len(lines) < limit:
                lines.append(line[:400])
        return counts, lines


def make_zip(files, modes=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            z.writestr(info, content)
    return buf.getvalue()


def deploy_c_function(node, test_runtime, tmp):
    """Creates the no-op C function (the test runtime as its bootstrap) on
    `node` and checks that it answers; returns its name."""
    with open(test_runtime, "rb") as f:
        z = make_zip({"bootstrap": f.read()}, {"bootstrap": 0o755})
    zip_path = os.path.join(tmp, "c.zip")
    with open(zip_path, "wb") as f:
        f.write(z)
    name, runtime, handler = FUNCTIONS["c"]
    node.create(name, runtime, handler, zip_path)
    check_invoke(node.port, name)
    return name


# -- relay ceiling -------------------------------------------------------------

def start_relay(relay, runtime, n, procs, timeout=30):
    """Starts bench/relay_ceiling with n runtimes; returns (proc, port)."""
    proc = procs.add("relay_ceiling", subprocess.Popen(
        [relay, runtime, str(n)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, start_new_session=True), group=True)
    deadline = time.time() + timeout
    line = ""
    while time.time() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        m = re.match(r"port (\d+)", line)
        if m:
            return proc, int(m.group(1))
    raise RuntimeError("relay_ceiling did not start (%r, exit %s)" % (line, proc.poll()))


# -- nginx ---------------------------------------------------------------------

def start_nginx(nginx, tmp, procs):
    prefix = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(prefix, "logs"))
    port = free_port()
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""worker_processes 2;
pid %(p)s/nginx.pid;
error_log %(p)s/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %(p)s/client_body;
  proxy_temp_path %(p)s/proxy;
  fastcgi_temp_path %(p)s/fastcgi;
  uwsgi_temp_path %(p)s/uwsgi;
  scgi_temp_path %(p)s/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:%(port)d;
    location / { default_type application/json; return 200 '{}'; }
  }
}
""" % {"p": prefix, "port": port})
    out = open(os.path.join(prefix, "logs", "stdout.log"), "w")
    proc = procs.add("nginx", subprocess.Popen(
        [nginx, "-p", prefix, "-c", conf, "-e", os.path.join(prefix, "logs", "error.log"),
         "-g", "daemon off;"], stdout=out, stderr=out, stdin=subprocess.DEVNULL),
        sig=signal.SIGQUIT)
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("nginx exited with %d: %s" % (
                proc.returncode, open(os.path.join(prefix, "logs", "error.log")).read()[-2000:]))
        try:
            status, _, body = http_call(port, "POST", "/", b"{}", timeout=2)
            if status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("nginx did not answer on port %d" % port)


# -- serverless-offline --------------------------------------------------------

def sls_installed(cache):
    def major(pkg):
        try:
            with open(os.path.join(cache, "node_modules", pkg, "package.json")) as f:
                return int(json.load(f)["version"].split(".")[0])
        except (OSError, ValueError, KeyError):
            return None
    return major("serverless") == 3 and major("serverless-offline") == 13


def install_serverless(cache, timeout):
    """Installs serverless@3 and serverless-offline@13 into the cache; None or a reason."""
    if sls_installed(cache):
        return None
    npm = shutil.which("npm")
    if not npm:
        return "npm not found"
    os.makedirs(cache, exist_ok=True)
    pkg = os.path.join(cache, "package.json")
    if not os.path.exists(pkg):
        with open(pkg, "w") as f:
            f.write('{"name": "nimbus-bench-serverless-offline", "private": true}\n')
    log("npm install %s into %s (at most %ds)" % (" ".join(SLS_PACKAGES), cache, timeout))
    try:
        p = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error",
                            *SLS_PACKAGES], cwd=cache, capture_output=True, text=True,
                           timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        return "npm install did not finish within %ds" % timeout
    if p.returncode != 0:
        return "npm install failed (%d): %s" % (p.returncode, p.stderr.strip()[-500:])
    return None if sls_installed(cache) else "npm install left no serverless@3/serverless-offline@13"


def start_serverless(cache, tmp, procs, timeout):
    """Starts `npx serverless offline start`; returns (proc, lambda port, function name)."""
    svc = os.path.join(tmp, "sls")
    os.makedirs(svc)
    os.symlink(os.path.join(cache, "node_modules"), os.path.join(svc, "node_modules"))
    lambda_port, http_port, ws_port = free_port(), free_port(), free_port()
    with open(os.path.join(svc, "serverless.yml"), "w") as f:
        f.write("""service: bench
frameworkVersion: '3'
provider:
  name: aws
  runtime: nodejs20.x
  region: us-east-1
  stage: dev
plugins:
  - serverless-offline
custom:
  serverless-offline:
    host: 127.0.0.1
    httpPort: %d
    websocketPort: %d
    lambdaPort: %d
functions:
  echo:
    handler: index.handler
""" % (http_port, ws_port, lambda_port))
    with open(os.path.join(svc, "index.mjs"), "w") as f:
        f.write(NODE_HANDLER)
    log_path = os.path.join(svc, "serverless.log")
    out = open(log_path, "w")
    env = dict(os.environ, SLS_TELEMETRY_DISABLED="1", SLS_NOTIFICATIONS_MODE="off",
               SLS_DEPRECATION_DISABLE="*", AWS_ACCESS_KEY_ID="bench",
               AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1", CI="1")
    proc = procs.add("serverless-offline", subprocess.Popen(
        ["npx", "--no", "serverless", "offline", "start"], cwd=svc, env=env, stdout=out,
        stderr=out, stdin=subprocess.DEVNULL, start_new_session=True), group=True)
    m = wait_for_log(log_path, r"listening on http://127\.0\.0\.1:%d" % lambda_port, proc, timeout)
    if not m:
        with open(log_path, errors="replace") as f:
            tail = f.read()[-800:]
        raise RuntimeError("serverless offline did not start within %ds: %s" % (timeout, tail))
    return proc, lambda_port, "bench-dev-echo"


# -- measurements --------------------------------------------------------------

def cold_starts(nimbus, key, name, n, settle, new_code=None):
    """n cold starts: configuration change (retires the old environments), then
    one invoke timed from request to response. With new_code (i -> zip bytes),
    a code update instead: the new code's image is not mounted yet."""
    samples, phases, warm_seen, errors = [], [], 0, []
    for i in range(n):
        if new_code:
            nimbus.set_code(name, new_code(i))
        else:
            nimbus.set_variable(name, "cold-%d-%f" % (i, time.time()))
        time.sleep(settle)  # let the retired environments go before the clock starts
        ms, status, headers, body = timed_invoke(nimbus.port, name)
        if status != 200 or "x-amz-function-error" in headers or body != b"{}":
            errors.append("status %d %s %s" % (status, headers.get("x-amz-function-error", ""),
                                               body[:200]))
            continue
        if headers.get("x-nimbus-start") != "cold":
            warm_seen += 1
            continue
        samples.append(ms)
        phases.append(parse_server_timing(headers.get("server-timing")))
    names = sorted({k for p in phases for k in p})
    res = {
        "n": n, "cold_samples": len(samples), "not_cold": warm_seen, "errors": errors,
        "p50_ms": rnd(statistics.median(samples)) if samples else None,
        "p90_ms": rnd(percentile(samples, 90)),
        "min_ms": rnd(min(samples)) if samples else None,
        "max_ms": rnd(max(samples)) if samples else None,
        "server_timing_p50_ms": {k: rnd(statistics.median([p[k] for p in phases if k in p]))
                                 for k in names},
        "samples_ms": [rnd(s) for s in samples],
    }
    log("  cold %s: p50 %s ms, p90 %s ms (%d cold, %d warm, %d errors) phases %s" % (
        key, res["p50_ms"], res["p90_ms"], len(samples), warm_seen, len(errors),
        res["server_timing_p50_ms"]))
    return res


def prewarm(port, name, n, event, timeout=120):
    """n invokes at once that each hold an environment for a second, so that n
    environments exist (each in-flight invoke needs its own) before wrk starts:
    cold starts are then not in the figures."""
    t0 = time.perf_counter()
    path = "/2015-03-31/functions/%s/invocations" % name

    def one(_):
        try:
            status, headers, body = http_call(port, "POST", path, event, timeout=timeout)
            return status, headers.get("x-nimbus-start"), body[:200]
        except OSError as e:
            return None, None, str(e)

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(one, range(n)))
    bad = [a for a in answers if a[0] != 200]
    res = {"invokes": n, "cold": sum(1 for a in answers if a[1] == "cold"),
           "errors": len(bad), "first_error": repr(bad[0]) if bad else None,
           "seconds": rnd(time.perf_counter() - t0)}
    log("  prewarm %s: %s" % (name, res))
    return res


def check_invoke(port, name):
    status, headers, body = http_call(port, "POST", "/2015-03-31/functions/%s/invocations" % name,
                                      b"{}")
    if status != 200 or "x-amz-function-error" in headers or body.strip() != b"{}":
        raise RuntimeError("invoke of %s answered %d %s %r" % (
            name, status, headers.get("x-amz-function-error", ""), body[:300]))
    return headers


# -- plot ----------------------------------------------------------------------

def plot_rows(results):
    rows = []
    for label, key in (("nginx static 200", "nginx"), ("relay ceiling, C", "relay_ceiling"),
                       ("Nimbus C provided", "nimbus_c"),
                       ("Nimbus python3.11", "nimbus_python"), ("Nimbus nodejs20.x", "nimbus_node"),
                       ("serverless-offline", "serverless_offline")):
        r = results["warm"].get(key) or {}
        if r.get("rps") is not None:
            rows.append((label, r["rps"], r.get("p50_ms") or 0.0))
    return rows


def write_gnuplot(gnuplot, rows, png, tmp, title):
    dat = os.path.join(tmp, "invoke.dat")
    with open(dat, "w") as f:
        for i, (label, rps, p50) in enumerate(rows):
            f.write('%d "%s" %.1f %.3f\n' % (i, label, rps, p50))
    gp = os.path.join(tmp, "invoke.gp")
    with open(gp, "w") as f:
        f.write("""set terminal pngcairo size 1200,520 font ",10"
set output "%(png)s"
set multiplot layout 1,2 title "%(title)s"
set style fill solid 0.8 border -1
set boxwidth 0.6
set grid ytics
set xtics rotate by 20 right scale 0
set offsets 0.5, 0.5, 0, 0
unset key
set logscale y
set yrange [10:*]
set title "Warm throughput (req/s, log scale, higher is better)"
plot "%(dat)s" using 1:3:xtic(2) with boxes lc rgb "#3b7dd8", \\
     "" using 1:3:(sprintf("%%.0f", $3)) with labels offset 0,0.8
unset logscale y
set yrange [0:*]
set title "p50 latency at 32 connections (ms, lower is better)"
plot "%(dat)s" using 1:4:xtic(2) with boxes lc rgb "#e07b39", \\
     "" using 1:4:(sprintf("%%.2f", $4)) with labels offset 0,0.8
unset multiplot
""" % {"png": png, "dat": dat, "title": title})
    p = subprocess.run([gnuplot, gp], capture_output=True, text=True, timeout=60)
    if p.returncode != 0 or not os.path.exists(png):
        raise RuntimeError("gnuplot failed: " + p.stderr.strip()[-500:])


def write_svg(rows, path, title):
    from xml.sax.saxutils import escape
    title = escape(title)
    rows = [(escape(r[0]),) + tuple(r[1:]) for r in rows]
    w, h, pad = 1200, 520, 60
    panel_w = (w - 3 * pad) / 2
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="12"><rect width="100%%" height="100%%" fill="white"/>' % (w, h),
           '<text x="%d" y="22" text-anchor="middle" font-size="15">%s</text>' % (w // 2, title)]
    for pi, (ptitle, idx, fmt, color) in enumerate((
            ("Warm throughput (req/s)", 1, "%.0f", "#3b7dd8"),
            ("p50 latency at 32 connections (ms)", 2, "%.2f", "#e07b39"))):
        x0 = pad + pi * (panel_w + pad)
        top, bottom = 70, h - 110
        vmax = max([r[idx] for r in rows] + [1e-9]) * 1.1
        out.append('<text x="%.0f" y="52" text-anchor="middle">%s</text>' % (x0 + panel_w / 2, ptitle))
        out.append('<line x1="%.0f" y1="%d" x2="%.0f" y2="%d" stroke="black"/>' % (
            x0, bottom, x0 + panel_w, bottom))
        slot = panel_w / max(len(rows), 1)
        for i, row in enumerate(rows):
            bh = (bottom - top) * row[idx] / vmax
            bx = x0 + i * slot + slot * 0.2
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>' % (
                bx, bottom - bh, slot * 0.6, bh, color))
            out.append('<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>' % (
                bx + slot * 0.3, bottom - bh - 5, fmt % row[idx]))
            out.append('<text transform="translate(%.1f,%d) rotate(25)">%s</text>' % (
                bx, bottom + 16, row[0]))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


# -- main ----------------------------------------------------------------------

def machine_info():
    info = {"nproc": len(os.sched_getaffinity(0)), "kernel": platform.release(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            info["cpu"] = m.group(1).strip() if m else None
        with open("/proc/meminfo") as f:
            m = re.search(r"MemTotal:\s+(\d+)", f.read())
            info["memory_mb"] = int(m.group(1)) // 1024 if m else None
    except OSError:
        pass
    # The node's parent cpu group survives the node (nimbusd reuses it), so a
    # cpu.shares left there by hand would skew every figure: record it.
    try:
        with open("/sys/fs/cgroup/cpu/nimbus-bench-node/cpu.shares") as f:
            info["bench_node_parent_cpu_shares"] = int(f.read())
    except (OSError, ValueError):
        info["bench_node_parent_cpu_shares"] = None  # not there yet (or cgroup v2)
    try:
        info["nimbus_commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                               capture_output=True, text=True,
                                               timeout=10).stdout.strip() or None
        info["nimbus_tree_dirty"] = bool(subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nimbusd", default=os.path.join(ROOT, "build", "bin", "nimbusd"))
    ap.add_argument("--test-runtime", default=os.path.join(ROOT, "build", "tests", "test_runtime"))
    ap.add_argument("--relay", default=os.path.join(ROOT, "build", "bench", "relay_ceiling"),
                    help="bench/relay_ceiling.c, built with the project")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--cache", default=os.path.join(HERE, ".cache", "serverless-offline"))
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=int, default=10, help="measured wrk pass, seconds")
    ap.add_argument("--warmup", type=int, default=3, help="wrk warm-up pass, seconds")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of a relay ceiling pass then a Nimbus C pass, and passes of "
                         "python, node and serverless-offline; figures are the medians")
    ap.add_argument("--cold", type=int, default=15, help="cold starts per runtime")
    ap.add_argument("--cold-settle", type=float, default=0.3,
                    help="seconds between a configuration change and the timed cold invoke")
    ap.add_argument("--no-serverless", action="store_true", help="skip serverless-offline")
    ap.add_argument("--serverless-timeout", type=int, default=300,
                    help="bound on npm install and on serverless offline start, seconds")
    ap.add_argument("--no-install", action="store_true", help="never apt-get missing tools")
    ap.add_argument("--wait-quiet", type=float, default=60,
                    help="seconds to wait at most for other load on the machine to end")
    ap.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs, configs)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    # SIGTERM unwinds like Ctrl-C, so every process started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for path in (args.nimbusd, args.test_runtime, AWS):
        if not os.access(path, os.X_OK):
            sys.exit("invoke_bench: %s is missing or not executable" % path)
    wrk_bin = ensure_tool("wrk", "wrk", not args.no_install)
    nginx_bin = ensure_tool("nginx", "nginx", not args.no_install) or \
        (os.access("/usr/sbin/nginx", os.X_OK) and "/usr/sbin/nginx") or None
    gnuplot_bin = ensure_tool("gnuplot", "gnuplot-nox", not args.no_install)
    if not wrk_bin:
        sys.exit("invoke_bench: wrk is missing (apt-get install wrk)")

    # Other work on the machine (builds, tests) skews every figure: wait a
    # while for it to finish, and record it.
    deadline = time.time() + args.wait_quiet
    while True:
        c0 = cpu_sample()
        time.sleep(2)
        busy = cpu_use(c0, cpu_sample())["machine_busy_cores"]
        if busy <= 0.2 or time.time() >= deadline:
            break
        log("the machine is busy (%.2f cores): waiting for it (at most %.0fs more)"
            % (busy, deadline - time.time()))
    background = {"busy_cores_before": busy,
                  "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    if background["busy_cores_before"] > 0.2:
        log("warning: the machine is busy before the run (%.2f cores): figures will be low"
            % background["busy_cores_before"])

    started = time.time()
    tmp = tempfile.mkdtemp(prefix="nimbus-invoke-bench-")
    procs = Procs()
    results = {
        "benchmark": "invoke",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "background_load": background,
        "method": {
            "load": "wrk -t%d -c%d -d%ds --latency, POST '{}' (Lua script), after a %ds warm-up "
                    "pass with the same concurrency" % (args.threads, args.connections,
                                                         args.duration, args.warmup),
            "auth": "nimbusd [api] authenticate = false (bench-only switch: no SigV4 "
                    "verification, every request acts as the first account)",
            "cold": "UpdateFunctionConfiguration (new environment variable) retires the old "
                    "environments; %.1fs later one invoke is timed from request to last byte "
                    "of the response on an open connection; only responses with "
                    "X-Nimbus-Start: cold count" % args.cold_settle,
            "functions": "no-op: return the event. C: tests/support/test_runtime.c as "
                         "/var/task/bootstrap (provided); python3.11; nodejs20.x (index.mjs)",
        },
        "tools": {"wrk": tool_version([wrk_bin, "-v"]),
                  "nginx": tool_version([nginx_bin, "-v"]) if nginx_bin else None,
                  "node": tool_version(["node", "--version"])},
        "warm": {},
        "cold_start": {},
        "cold_start_new_code": {},
        "failures": [],
    }
    nimbus = None
    try:
        nimbus = Nimbus(args.nimbusd, tmp, procs)
        nimbus.start()
        results["nimbus_config"] = nimbus.config
        bench_wrk = Wrk(wrk_bin, tmp, args.threads, args.connections, args.duration, args.warmup)

        # Functions, created with the aws CLI.
        with open(args.test_runtime, "rb") as f:
            zips = {
                "c": make_zip({"bootstrap": f.read()}, {"bootstrap": 0o755}),
                "python": make_zip({"app.py": PY_HANDLER}),
                "node": make_zip({"index.mjs": NODE_HANDLER}),
            }
        for key, (name, runtime, handler) in FUNCTIONS.items():
            zp = os.path.join(tmp, name + ".zip")
            with open(zp, "wb") as f:
                f.write(zips[key])
            nimbus.create(name, runtime, handler, zp)
            log("created %s (%s)" % (name, runtime))

        # Cold starts first, while no other environments exist.
        for key, (name, _, _) in FUNCTIONS.items():
            try:
                results["cold_start"][key] = cold_starts(nimbus, key, name, args.cold,
                                                         args.cold_settle)
            except Exception as e:
                results["failures"].append("cold start %s: %s" % (key, e))
                log("cold start %s failed: %s" % (key, e))
        # C once more, each time with new code (a zip no image was made from
        # yet): the image is built and mounted for it, where a configuration
        # change finds the old one still mounted ([code] mount_linger_seconds).
        try:
            c_name = FUNCTIONS["c"][0]
            with open(args.test_runtime, "rb") as f:
                runtime_bytes = f.read()
            nonce = "%d-%f" % (os.getpid(), time.time())
            results["cold_start_new_code"]["c"] = cold_starts(
                nimbus, "c new code", c_name, args.cold, args.cold_settle,
                new_code=lambda i: make_zip({"bootstrap": runtime_bytes,
                                             "nonce.txt": "%s-%d\n" % (nonce, i)},
                                            {"bootstrap": 0o755}))
            nimbus.set_code(c_name, zips["c"])
        except Exception as e:
            results["failures"].append("cold start c new code: %s" % e)
            log("cold start c new code failed: %s" % e)

        # nginx: the HTTP ceiling.
        if nginx_bin:
            try:
                nginx_proc, nginx_port = start_nginx(nginx_bin, tmp, procs)
                results["warm"]["nginx"] = bench_wrk.measure(
                    "nginx", "http://127.0.0.1:%d/2015-03-31/functions/x/invocations" % nginx_port)
                procs.stop(nginx_proc)
            except Exception as e:
                results["failures"].append("nginx: %s" % e)
                log("nginx failed: %s" % e)
        else:
            results["failures"].append("nginx: not installed")

        # Nimbus warm throughput.
        for key, (name, _, _) in FUNCTIONS.items():
            try:
                check_invoke(nimbus.port, name)  # warm it
                warmed = prewarm(nimbus.port, name, args.connections, PREWARM_EVENT[key])
                wait_idle(nimbus.port)
                if key == "c":
                    # The relay ceiling and C: rounds of passes next to each
                    # other, reported as medians (the machine's speed drifts
                    # by tens of percent within minutes).
                    relay, r, rounds, relay_problem = c_rounds(bench_wrk, args, procs,
                                                               nimbus, name)
                    results["rounds"] = rounds
                    if relay:
                        results["warm"]["relay_ceiling"] = relay
                    else:
                        results["failures"].append("relay ceiling: %s" % relay_problem)
                else:
                    r = measure_passes(
                        bench_wrk, "nimbus " + key,
                        "http://127.0.0.1:%d/2015-03-31/functions/%s/invocations"
                        % (nimbus.port, name), args.rounds,
                        metrics_port=nimbus.port, cpu_pid=nimbus.proc.pid)
                r["prewarm"] = warmed
                r["one_connection"] = bench_wrk.single(
                    "nimbus " + key,
                    "http://127.0.0.1:%d/2015-03-31/functions/%s/invocations" % (nimbus.port, name))
                results["warm"]["nimbus_" + key] = r
                check_invoke(nimbus.port, name)
            except Exception as e:
                results["failures"].append("nimbus %s warm: %s" % (key, e))
                log("nimbus %s warm failed: %s" % (key, e))

        # serverless-offline, when npm is reachable.
        if args.no_serverless:
            results["warm"]["serverless_offline"] = {"skipped": "--no-serverless"}
        else:
            reason = install_serverless(args.cache, args.serverless_timeout)
            if reason:
                results["warm"]["serverless_offline"] = {"skipped": reason}
                log("serverless-offline skipped: " + reason)
            else:
                try:
                    sproc, sport, sname = start_serverless(args.cache, tmp, procs,
                                                           min(args.serverless_timeout, 180))
                    check_invoke(sport, sname)
                    r = measure_passes(
                        bench_wrk, "serverless-offline",
                        "http://127.0.0.1:%d/2015-03-31/functions/%s/invocations" % (sport, sname),
                        args.rounds)
                    r["versions"] = {p: json.load(open(os.path.join(
                        args.cache, "node_modules", p, "package.json")))["version"]
                        for p in ("serverless", "serverless-offline")}
                    results["warm"]["serverless_offline"] = r
                    procs.stop(sproc)
                except Exception as e:
                    results["warm"]["serverless_offline"] = {"skipped": "start or run failed: %s" % e}
                    log("serverless-offline failed: %s" % e)
    except Exception as e:
        results["failures"].append("fatal: %s" % e)
        log("fatal: %s" % e)
    finally:
        if nimbus is not None and nimbus.proc is not None:
            try:
                results["nimbusd_exit_code"] = nimbus.stop()
            except Exception as e:
                results["failures"].append("stopping nimbusd: %s" % e)
        procs.stop_all()
        if nimbus is not None and os.path.exists(nimbus.log_path):
            counts, lines = nimbus.problems()
            results["nimbusd_log"] = {"counts": counts, "lines": lines}
        if args.keep_temp:
            log("temp dir kept: " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # Figures, ratios, targets.
    warm = results["warm"]

    def fig(key, field):
        return (warm.get(key) or {}).get(field)

    c_rps, c_p50 = fig("nimbus_c", "rps"), fig("nimbus_c", "p50_ms")
    sls_rps, nginx_rps = fig("serverless_offline", "rps"), fig("nginx", "rps")
    results["ratios"] = {
        "nimbus_c_over_serverless_offline": ratio(c_rps, sls_rps),
        "nimbus_c_over_nginx": ratio(c_rps, nginx_rps),
        "nimbus_c_over_relay_ceiling": ratio(c_rps, fig("relay_ceiling", "rps")),
        "nimbus_c_over_relay_ceiling_rounds_median": (results.get("rounds") or {}).get("median_ratio"),
        "nimbus_python_over_serverless_offline": ratio(fig("nimbus_python", "rps"), sls_rps),
        "nimbus_node_over_serverless_offline": ratio(fig("nimbus_node", "rps"), sls_rps),
    }
    cold_c = (results["cold_start"].get("c") or {}).get("p50_ms")

    def verdict(value, limit, higher_is_better):
        if value is None:
            return {"value": None, "target": limit, "met": None}
        met = value >= limit if higher_is_better else value <= limit
        return {"value": rnd(value, 3), "target": limit, "met": met}

    results["targets"] = {
        "nimbus_c_rps": verdict(c_rps, TARGETS["nimbus_c_rps_min"], True),
        "nimbus_c_over_serverless_offline": verdict(
            results["ratios"]["nimbus_c_over_serverless_offline"],
            TARGETS["nimbus_c_over_serverless_offline_min"], True),
        "nimbus_python_rps": verdict(fig("nimbus_python", "rps"),
                                     TARGETS["nimbus_python_rps_min"], True),
        "nimbus_c_p50_ms": verdict(c_p50, TARGETS["nimbus_c_p50_ms_max"], False),
        "cold_start_c_p50_ms": verdict(cold_c, TARGETS["cold_start_c_p50_ms_max"], False),
    }
    results["summary"] = {
        "rps": {k: rnd(v.get("rps"), 1) for k, v in warm.items() if v.get("rps") is not None},
        "p50_ms": {k: v.get("p50_ms") for k, v in warm.items() if v.get("rps") is not None},
        "p99_ms": {k: v.get("p99_ms") for k, v in warm.items() if v.get("rps") is not None},
        "non_2xx": {k: v.get("non_2xx") for k, v in warm.items() if v.get("rps") is not None},
        "cold_start_p50_ms": {k: v.get("p50_ms") for k, v in results["cold_start"].items()},
        "cold_start_p90_ms": {k: v.get("p90_ms") for k, v in results["cold_start"].items()},
        "cold_start_new_code_p50_ms": {k: v.get("p50_ms")
                                       for k, v in results["cold_start_new_code"].items()},
        "skipped": {k: v["skipped"] for k, v in warm.items() if "skipped" in v},
    }
    results["run_seconds"] = round(time.time() - started, 1)
    c0 = cpu_sample()
    time.sleep(2)
    background["busy_cores_after"] = cpu_use(c0, cpu_sample())["machine_busy_cores"]
    background["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    # Plot.
    os.makedirs(args.out, exist_ok=True)
    rows = plot_rows(results)
    title = "Nimbus invoke, wrk -c%d -d%ds, %d cores, %s" % (
        args.connections, args.duration, results["machine"]["nproc"], results["date"][:10])
    plot_tmp = tempfile.mkdtemp(prefix="nimbus-invoke-plot-")
    try:
        png = os.path.join(args.out, "invoke.png")
        if not gnuplot_bin:
            raise RuntimeError("gnuplot not installed")
        write_gnuplot(gnuplot_bin, rows, png, plot_tmp, title)
        results["plot"] = "invoke.png"
    except Exception as e:
        log("PNG plot failed (%s): writing SVG" % e)
        write_svg(rows, os.path.join(args.out, "invoke.svg"), title)
        results["plot"] = "invoke.svg"
    finally:
        shutil.rmtree(plot_tmp, ignore_errors=True)

    with open(os.path.join(args.out, "invoke.json"), "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")

    # Human summary.
    print("Invoke benchmark (%s, %d cores, kernel %s), wrk -t%d -c%d -d%ds" % (
        results["date"], results["machine"]["nproc"], results["machine"]["kernel"],
        args.threads, args.connections, args.duration))
    print("  %-20s %12s %9s %9s %8s" % ("target", "req/s", "p50 ms", "p99 ms", "non-2xx"))
    for k, v in warm.items():
        if "skipped" in v:
            print("  %-20s skipped: %s" % (k, v["skipped"][:100]))
        elif v.get("rps") is not None:
            print("  %-20s %12.0f %9.3f %9.3f %8d" % (k, v["rps"], v["p50_ms"] or 0,
                                                      v["p99_ms"] or 0, v["non_2xx"]))
    for k, v in results["cold_start"].items():
        print("  cold start %-8s p50 %s ms, p90 %s ms; server phases p50 %s" % (
            k, v["p50_ms"], v["p90_ms"], v["server_timing_p50_ms"]))
    for k, v in results["cold_start_new_code"].items():
        print("  cold start %-8s p50 %s ms, p90 %s ms; server phases p50 %s (new code each time)"
              % (k, v["p50_ms"], v["p90_ms"], v["server_timing_p50_ms"]))
    rounds = (results.get("rounds") or {}).get("rounds") or []
    if rounds:
        print("  rounds (relay, C req/s, C p50 ms, ratio): %s" % "; ".join(
            "%s, %s, %s, %s" % (r["relay_rps"], r["nimbus_c_rps"], r["nimbus_c_p50_ms"], r["ratio"])
            for r in rounds))
    print("  ratios: %s" % results["ratios"])
    for k, v in results["targets"].items():
        state = "n/a" if v["met"] is None else ("met" if v["met"] else "MISSED")
        print("  target %-34s %-6s (%s vs %s)" % (k, state, v["value"], v["target"]))
    if results["failures"]:
        print("  failures: %s" % results["failures"])
    print("  background load: %s" % background)
    nl = results.get("nimbusd_log", {}).get("counts")
    if nl:
        print("  nimbusd log: %s; exit code %s" % (nl, results.get("nimbusd_exit_code")))
    print("  wrote %s and %s (%.0fs)" % (os.path.join(args.out, "invoke.json"),
                                         os.path.join(args.out, results["plot"]),
                                         results["run_seconds"]))
    fatal = any(f.startswith("fatal") for f in results["failures"])
    return 1 if fatal else 0


if __name__ == "__main__":
    sys.exit(main())
