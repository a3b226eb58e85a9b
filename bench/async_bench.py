#!/usr/bin/env python3
"""Async invoke benchmark: durable accept throughput and latency, next to the
raw fsync rate of the same disk, and end-to-end latency from accept to the
start of the handler, all in one run.

  * raw fsync: 4 KiB write + fsync in a loop on a file in nimbusd's data
    directory, for 3 s (the ceiling for one-fsync-per-event designs);
  * accept: wrk, 32 connections, 10 s, POST '{}' with X-Amz-Invocation-Type:
    Event to a no-op C function (tests/support/test_runtime.c): every 202 means
    the event was on disk (group commit: many events per fsync). Pollers run
    the events meanwhile, as they would in production;
  * end to end: 10 s at a steady 50 events/s to a python function that logs
    the time its handler started; latency = handler start - send time.

nimbusd runs with `[api] authenticate = false` (bench-only; see
invoke_bench.py). Writes OUT/async.json. Needs root.

  bench/async_bench.py [--nimbusd PATH] [--test-runtime PATH] [--out DIR]
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import invoke_bench as b  # noqa: E402

E2E_HANDLER = ("import time\n\n"
               "def handler(event, context):\n"
               "    print('E2E', event.get('sent'), time.time())\n"
               "    return {}\n")


def raw_fsync_rate(directory, seconds=3.0):
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"x" * 4096
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            os.write(fd, block)
            os.fsync(fd)
            n += 1
    finally:
        os.close(fd)
        os.unlink(path)
    return n / (time.perf_counter() - t0)


def accept(wrk_bin, tmp, port, name, duration):
    script = os.path.join(tmp, "event.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = "{}"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                'wrk.headers["X-Amz-Invocation-Type"] = "Event"\n')
    url = "http://127.0.0.1:%d/2015-03-31/functions/%s/invocations" % (port, name)
    import subprocess
    p = subprocess.run([wrk_bin, "-t2", "-c32", "-d%ds" % duration, "--timeout", "10s",
                        "--latency", "-s", script, url],
                       capture_output=True, text=True, timeout=duration + 60)
    r = b.parse_wrk(p.stdout)
    r["wrk_output"] = p.stdout.strip().splitlines()
    return r


def end_to_end(port, name, rate, seconds):
    sent = []
    path = "/2015-03-31/functions/%s/invocations" % name
    interval = 1.0 / rate
    t_next = time.time()
    end = t_next + seconds
    while time.time() < end:
        now = time.time()
        if now < t_next:
            time.sleep(t_next - now)
        ts = time.time()
        status, _, _ = b.http_call(port, "POST", path, {"sent": ts},
                                   headers={"X-Amz-Invocation-Type": "Event"})
        if status == 202:
            sent.append(ts)
        t_next += interval
    # Wait for the handlers to have run, then read their start times.
    deadline = time.time() + 60
    lat = []
    while time.time() < deadline:
        status, _, body = b.http_call(port, "GET", "/nimbus/logs/%s?Tail=16000000" % name)
        lat = [float(e) - float(s) for s, e in
               re.findall(r"E2E ([0-9.]+) ([0-9.]+)", body.decode(errors="replace"))]
        if len(lat) >= len(sent):
            break
        time.sleep(0.5)
    lat.sort()
    res = {"sent": len(sent), "ran": len(lat), "rate_per_s": rate}
    if lat:
        res["p50_ms"] = b.rnd(b.percentile(lat, 50) * 1000)
        res["p90_ms"] = b.rnd(b.percentile(lat, 90) * 1000)
        res["p99_ms"] = b.rnd(b.percentile(lat, 99) * 1000)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nimbusd", default=os.path.join(b.ROOT, "build", "bin", "nimbusd"))
    ap.add_argument("--test-runtime", default=os.path.join(b.ROOT, "build", "tests", "test_runtime"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--duration", type=int, default=10)
    args = ap.parse_args()
    wrk_bin = b.ensure_tool("wrk", "wrk", True)
    tmp = tempfile.mkdtemp(prefix="nimbus-async-bench-")
    procs = b.Procs()
    results = {"benchmark": "async", "machine": b.machine_info(),
               "method": {"accept": "wrk -t2 -c32 -d%ds, POST '{}' with X-Amz-Invocation-Type: "
                                    "Event; 202 only after the event is durable" % args.duration,
                          "raw_fsync": "4 KiB write + fsync loop, 3 s, same directory",
                          "end_to_end": "50 events/s for 10 s; handler start minus send time"}}
    nimbus = b.Nimbus(args.nimbusd, tmp, procs)
    try:
        nimbus.start()
        data_dir = os.path.join(nimbus.dir, "data")
        results["raw_fsync_per_s"] = b.rnd(raw_fsync_rate(data_dir), 1)
        b.log("raw fsync: %.0f/s" % results["raw_fsync_per_s"])
        with open(args.test_runtime, "rb") as f:
            c_zip = b.make_zip({"bootstrap": f.read()}, {"bootstrap": 0o755})
        for name, runtime, handler, data in (
                ("async-c", "provided", "bootstrap", c_zip),
                ("async-py", "python3.11", "app.handler", b.make_zip({"app.py": E2E_HANDLER}))):
            zp = os.path.join(tmp, name + ".zip")
            with open(zp, "wb") as f:
                f.write(data)
            nimbus.create(name, runtime, handler, zp)
        r = accept(wrk_bin, tmp, nimbus.port, "async-c", args.duration)
        results["accept"] = {k: r[k] for k in ("rps", "requests", "p50_ms", "p90_ms", "p99_ms",
                                               "non_2xx", "socket_errors")}
        results["accept"]["wrk_output"] = r["wrk_output"]
        results["accept_over_raw_fsync"] = b.rnd((r["rps"] or 0) / results["raw_fsync_per_s"])
        b.log("accept: %.0f 202/s, p50 %.3f ms, p99 %.3f ms, non-2xx %d (%.1fx raw fsyncs)" % (
            r["rps"] or 0, r["p50_ms"] or 0, r["p99_ms"] or 0, r["non_2xx"],
            results["accept_over_raw_fsync"]))
        # Let the backlog drain before the latency run.
        deadline = time.time() + 300
        while time.time() < deadline:
            _, _, text = b.http_call(nimbus.port, "GET", "/metrics")
            m = re.search(rb"^nimbus_async_queue_depth (\d+)", text, re.M)
            if m and int(m.group(1)) == 0:
                break
            time.sleep(1)
        results["drain_seconds"] = b.rnd(time.time() - (deadline - 300), 1)
        results["end_to_end"] = end_to_end(nimbus.port, "async-py", 50, 10)
        b.log("end to end: %s" % results["end_to_end"])
    finally:
        nimbus.stop()
        procs.stop_all()
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "async.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    b.log("wrote %s" % out)


if __name__ == "__main__":
    main()
