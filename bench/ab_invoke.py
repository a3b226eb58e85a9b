#!/usr/bin/env python3
"""Interleaved A/B of two nimbusd builds on the warm invoke path.

    python3 bench/ab_invoke.py --a OLD/nimbusd --b NEW/nimbusd [--rounds 4] [--duration 8]
    python3 bench/ab_invoke.py --a build/bin/nimbusd --b build/bin/nimbusd \
        --b-set api.pin_io_threads=false     # one build, two configs

Each round starts a node on each build in turn (the order swaps every round,
so a drift of the machine's speed does not favour one build), creates the
no-op C function (tests/support/test_runtime.c), pre-warms one environment per
connection and measures it with wrk as invoke_bench.py does. It prints each
pass (req/s, p50, CPU per request of nimbusd and of the environments) and, per
build, the medians; then the median over rounds of B's req/s over A's and of
B's nimbusd CPU per request over A's. Only those ratios mean much on a shared
machine: a single pass can be off by tens of percent.

A build's nimbus-jail must sit next to its nimbusd (copy both, or a symlink).
Needs root (sandboxes) and wrk. Standard library only.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import invoke_bench as ib  # noqa: E402


def one_pass(label, nimbusd, options, test_runtime, wrk_bin, args):
    """Starts a node on `nimbusd` with the config `options` ((section, key,
    value) triples), measures the C function, stops the node."""
    tmp = tempfile.mkdtemp(prefix="nimbus-ab-")
    procs = ib.Procs()
    try:
        node = ib.Nimbus(nimbusd, tmp, procs)
        for section, key, value in options:
            node.set_option(section, key, value)
        node.start()
        name = ib.deploy_c_function(node, test_runtime, tmp)
        ib.prewarm(node.port, name, args.connections, ib.PREWARM_EVENT["c"])
        ib.wait_idle(node.port)
        wrk = ib.Wrk(wrk_bin, tmp, args.threads, args.connections, args.duration, args.warmup)
        r = wrk.measure(label, "http://127.0.0.1:%d/2015-03-31/functions/%s/invocations"
                        % (node.port, name), metrics_port=node.port, cpu_pid=node.proc.pid)
        code = node.stop()
        if r["non_2xx"] or not r["rps"]:
            raise RuntimeError("%s: %s non-2xx answers, %s req/s" % (label, r["non_2xx"], r["rps"]))
        cpu = r["cpu"]
        return {"rps": round(r["rps"], 1), "p50_ms": r["p50_ms"],
                "nimbusd_us_per_req": round(cpu["nimbusd_cores"] * 1e6 / r["rps"], 1),
                "environments_us_per_req": round(cpu["environments_cores"] * 1e6 / r["rps"], 1),
                "machine_busy_cores": cpu["machine_busy_cores"], "nimbusd_exit": code}
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="nimbusd of build A (the baseline)")
    ap.add_argument("--b", required=True, help="nimbusd of build B")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=int, default=8, help="measured wrk seconds per pass")
    ap.add_argument("--warmup", type=int, default=2, help="wrk warm-up seconds per pass")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--test-runtime", default=os.path.join(ROOT, "build", "tests", "test_runtime"))
    ap.add_argument("--a-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a config setting for A's node (TOML value, e.g. api.pin_io_threads=false;"
                         " repeatable)")
    ap.add_argument("--b-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="the same for B's node")
    ap.add_argument("--out", help="also write the results as JSON to this file")
    args = ap.parse_args()
    options = {}
    for key, settings in (("a", args.a_set), ("b", args.b_set)):
        options[key] = []
        for s in settings:
            name, eq, value = s.partition("=")
            section, dot, option = name.partition(".")
            if not eq or not dot or not section or not option:
                ap.error("--%s-set %s: expected SECTION.KEY=VALUE" % (key, s))
            options[key].append((section, option, value))
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    builds = {"a": os.path.abspath(args.a), "b": os.path.abspath(args.b)}
    for key, path in builds.items():
        if not os.access(path, os.X_OK):
            ap.error("--%s: %s is not an executable" % (key, path))
        jail = os.path.join(os.path.dirname(path), "nimbus-jail")
        if not os.access(jail, os.X_OK):
            ap.error("--%s: no nimbus-jail next to %s" % (key, path))
    if not os.access(args.test_runtime, os.X_OK):
        ap.error("%s is not built (cmake --build build)" % args.test_runtime)
    wrk_bin = shutil.which("wrk")
    if not wrk_bin:
        ap.error("wrk is not installed (apt-get install wrk)")

    rounds = []
    for i in range(args.rounds):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        got = {}
        for key in order:
            got[key] = one_pass("round %d %s" % (i + 1, key), builds[key], options[key],
                                args.test_runtime, wrk_bin, args)
            print("round %d %s: %8.0f req/s  p50 %.2f ms  nimbusd %6.1f us/req  environments "
                  "%5.1f us/req  busy %.2f cores" % (
                      i + 1, key, got[key]["rps"], got[key]["p50_ms"],
                      got[key]["nimbusd_us_per_req"], got[key]["environments_us_per_req"],
                      got[key]["machine_busy_cores"]), flush=True)
        got["rps_b_over_a"] = round(got["b"]["rps"] / got["a"]["rps"], 3)
        got["nimbusd_cpu_b_over_a"] = round(
            got["b"]["nimbusd_us_per_req"] / got["a"]["nimbusd_us_per_req"], 3)
        rounds.append(got)

    def median(key, field):
        return statistics.median(r[key][field] for r in rounds)

    summary = {
        key: {field: median(key, field) for field in
              ("rps", "p50_ms", "nimbusd_us_per_req", "environments_us_per_req")}
        for key in ("a", "b")}
    summary["median_rps_b_over_a"] = statistics.median(r["rps_b_over_a"] for r in rounds)
    summary["median_nimbusd_cpu_b_over_a"] = statistics.median(
        r["nimbusd_cpu_b_over_a"] for r in rounds)
    summary["rounds_b_faster"] = sum(1 for r in rounds if r["rps_b_over_a"] > 1)
    for key in ("a", "b"):
        s = summary[key]
        print("median %s (%s): %.0f req/s, p50 %.2f ms, nimbusd %.1f us/req, environments %.1f "
              "us/req" % (key, builds[key], s["rps"], s["p50_ms"], s["nimbusd_us_per_req"],
                          s["environments_us_per_req"]))
    print("b over a: req/s x%.3f (b faster in %d of %d rounds), nimbusd CPU per request x%.3f "
          "(medians of the rounds' ratios)" % (
              summary["median_rps_b_over_a"], summary["rounds_b_faster"], len(rounds),
              summary["median_nimbusd_cpu_b_over_a"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"builds": builds, "method": vars(args), "rounds": rounds,
                       "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
