#!/usr/bin/env python3
"""What per-core sharding of the warm invoke path might be worth, measured
before building it.

    python3 bench/per_core_emulation.py [--rounds 6] [--duration 5] [--nimbusd PATH]

Emulates a node that keeps each request on one CPU: two nodes, each pinned
(nimbusd and its sandboxes, with taskset) to a CPU of its own and driven by
its own `wrk -t1 -c16`, against one unpinned node driven by `wrk -t2 -c32`,
as bench/invoke_bench.py measures it. Both set-ups serve the no-op C function
with 32 warm environments in total. Rounds alternate the set-ups (and their
order); it prints every pass and the median req/s of each. Needs root and wrk,
like invoke_bench.py; not part of run.sh (see bench/README.md).

The emulation is the extreme case: the two pinned nodes share nothing (not the
counter, not the assignment), which a real per-core design inside one node
would.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import invoke_bench as ib  # noqa: E402


def start_node(nimbusd, name, procs, runtime):
    tmp = tempfile.mkdtemp(prefix="nimbus-percore-")
    n = ib.Nimbus(nimbusd, tmp, procs)
    # One nimbusd per node name and host: each node gets its own.
    n.config = n.config.replace('name = "bench-node"', 'name = "%s"' % name)
    with open(n.config_path, "w") as f:
        f.write(n.config)
    n.start()
    ib.deploy_c_function(n, runtime, tmp)
    return n


def sandbox_pids(name):
    """The processes of a node's sandboxes: in a cgroup under the node's
    parent group nimbus-<name>."""
    pids = []
    for pid in ib.sandbox_processes():
        try:
            with open("/proc/%s/cgroup" % pid) as f:
                if "/nimbus-%s/" % name in f.read():
                    pids.append(pid)
        except OSError:
            pass
    return pids


def pin(node, name, cpu):
    mask = "%x" % (1 << cpu)
    for pid in [str(node.proc.pid)] + sandbox_pids(name):
        subprocess.run(["taskset", "-a", "-p", mask, pid], capture_output=True, check=False)


WRK = shutil.which("wrk") or "/usr/bin/wrk"
C_FUNCTION = ib.FUNCTIONS["c"][0]


def wrk_rps(port, threads, connections, seconds, out, key):
    url = "http://127.0.0.1:%d/2015-03-31/functions/%s/invocations" % (port, C_FUNCTION)
    w = ib.Wrk(WRK, tempfile.mkdtemp(prefix="nimbus-percore-wrk-"), threads, connections,
               seconds, 0)
    out[key] = ib.parse_wrk(w.run(url, seconds))["rps"] or 0.0


def remove_empty_parents(names):
    """The nodes' parent cgroups outlive them; remove them once empty (rmdir
    fails on a group that still has members or children)."""
    for name in names:
        for hierarchy in ("cpu", "freezer", "pids", "memory", "unified"):
            try:
                os.rmdir("/sys/fs/cgroup/%s/nimbus-%s" % (hierarchy, name))
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nimbusd", default=os.path.join(ib.ROOT, "build", "bin", "nimbusd"))
    ap.add_argument("--test-runtime", default=os.path.join(ib.ROOT, "build", "tests", "test_runtime"))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measured pass")
    args = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs at least 2 CPUs")
    procs = ib.Procs()
    try:
        a = start_node(args.nimbusd, "percore-a", procs, args.test_runtime)
        b = start_node(args.nimbusd, "percore-b", procs, args.test_runtime)
        one = start_node(args.nimbusd, "percore-one", procs, args.test_runtime)
        for n in (a, b):
            ib.prewarm(n.port, C_FUNCTION, 16, ib.PREWARM_EVENT["c"])
        ib.prewarm(one.port, C_FUNCTION, 32, ib.PREWARM_EVENT["c"])
        time.sleep(1)
        pin(a, "percore-a", 0)
        pin(b, "percore-b", 1)
        results = {"pinned_pair": [], "one_node": []}
        for r in range(args.rounds):
            order = ["pinned_pair", "one_node"] if r % 2 == 0 else ["one_node", "pinned_pair"]
            for setup in order:
                out = {}
                if setup == "pinned_pair":
                    warm = {}
                    wrk_rps(a.port, 1, 16, 1, warm, "a")
                    wrk_rps(b.port, 1, 16, 1, warm, "b")
                    ts = [threading.Thread(target=wrk_rps, args=(n.port, 1, 16, args.duration, out, k))
                          for n, k in ((a, "a"), (b, "b"))]
                    for t in ts:
                        t.start()
                    for t in ts:
                        t.join()
                    rps = out.get("a", 0.0) + out.get("b", 0.0)
                else:
                    wrk_rps(one.port, 2, 32, 1, {}, "warm")
                    wrk_rps(one.port, 2, 32, args.duration, out, "x")
                    rps = out["x"]
                results[setup].append(rps)
                print("round %d %-11s %7.0f req/s %s" % (
                    r + 1, setup, rps, {k: round(v) for k, v in out.items()}), flush=True)
        med = {k: statistics.median(v) for k, v in results.items()}
        wins = sum(1 for p, o in zip(results["pinned_pair"], results["one_node"]) if p > o)
        for k, v in med.items():
            print("median %-11s %7.0f req/s" % (k, v))
        print("pinned pair over one node: x%.3f (pinned pair faster in %d of %d rounds)"
              % (med["pinned_pair"] / med["one_node"], wins, args.rounds))
    finally:
        procs.stop_all()
        remove_empty_parents(["percore-a", "percore-b", "percore-one"])


if __name__ == "__main__":
    main()
