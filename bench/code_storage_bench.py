#!/usr/bin/env python3
"""Code storage benchmark (issue 6), end to end through one real nimbusd:
deduplication of pushed container images and lazy cold starts of a big image
next to a small zip function, measured in one run on this machine.

  1. dedup: 10 `docker save` archives (written by hand, as in
     tests/integration/code_storage_test.py), each a 100 MiB layer that all
     share (/bin/runtime + /opt/shared/*, random data from a fixed seed) and
     1 MiB of its own (/zz/unique.bin: sorts after /opt, so the shared blocks
     keep their offsets), pushed with PUT /nimbus/images/{repo}:{tag}; 10
     Image functions created from them. Reported: sealed bytes of the chunks
     in the pack store under data_dir/code/chunks over the unique payload
     (100 MiB + 10 x 1 MiB); target <= 1.1.
  2. lazy cold start: an Image function whose image is ~200 MiB (40 files of
     5 MiB random data + the static C test runtime) that reads one 5 MiB file
     per invoke, next to a small zip function (provided runtime, the C test
     runtime as bootstrap, reads its data.txt). Each cold start is timed from
     the HTTP request to the last byte of the response (X-Nimbus-Start must be
     cold), N samples per mode:
       * cold node: nimbusd is restarted before each sample (its memory chunk
         cache is empty, nothing is mounted) and the page cache of the pack
         files is dropped (posix_fadvise DONTNEED on those files only), so
         every chunk comes from the store on disk; a primer function takes the
         first-invoke costs after the start; the two functions alternate order;
       * warm cache: a configuration change retires the environments (as
         bench/invoke_bench.py does); the chunks are in the worker's cache.
     Reported: medians and p90s, the gap (target <= 20 ms), Server-Timing
     phases, nimbusd CPU per cold start, and chunks fetched from the store per
     big-image cold start over the image's chunks (metrics delta; target <=
     10%).

nimbusd runs with `[api] authenticate = false` (bench-only; see
invoke_bench.py). Big temporary files go under /var/tmp and are removed.
Writes OUT/code_storage.json. Needs root. Python standard library only.

  bench/code_storage_bench.py [--nimbusd PATH] [--test-runtime PATH]
                              [--static-runtime PATH] [--out DIR] [--samples N]
"""

import argparse
import hashlib
import http.client
import io
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import invoke_bench as b  # noqa: E402
from nimbus_harness import pack_files, stored_chunks  # noqa: E402

MIB = 1 << 20
CHUNK = 512 * 1024
SHARED_FILES, SHARED_FILE_BYTES = 20, 5 * MIB     # 100 MiB shared by the dedup images
OWN_BYTES = 1 * MIB                               # per dedup image
DEDUP_IMAGES = 10
BIG_FILES, BIG_FILE_BYTES = 40, 5 * MIB           # the 200 MiB lazy image
TARGETS = {"dedup_stored_over_unique_max": 1.1, "lazy_gap_ms_max": 20.0,
           "lazy_fetched_share_max": 0.10}
MTIME = 1577836800


def log(msg):
    print("[code_storage_bench] " + msg, file=sys.stderr, flush=True)


# -- archives ------------------------------------------------------------------

def seeded(seed, n):
    return random.Random(seed).randbytes(n)


def add(t, name, data=None, mode=0o644):
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.mode = mode
    if data is None:
        info.type = tarfile.DIRTYPE
        t.addfile(info)
    else:
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))


def write_layer(path, entries):
    """A layer tar from [(name, bytes or None for a directory, mode)];
    returns its sha256 (the diff id)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
        for name, data, mode in entries:
            add(t, name, data, mode)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def write_docker_save(path, tag, layers):
    """A `docker save` archive at path from [(layer tar path, diff id)];
    the entrypoint is the static C test runtime at /bin/runtime."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/runtime"], "Env": ["PATH=/usr/bin:/bin"],
                   "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for _, d in layers]},
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = ["l%d/layer.tar" % i for i in range(len(layers))]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
        for name, (layer, _) in zip(names, layers):
            add(t, os.path.dirname(name) + "/", None, 0o755)
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            info.mode = 0o644
            info.size = os.path.getsize(layer)
            with open(layer, "rb") as f:
                t.addfile(info, f)
        add(t, config_name, config)
        add(t, "manifest.json", manifest)
    return os.path.getsize(path)


def runtime_zip(test_runtime, line):
    with open(test_runtime, "rb") as f:
        return b.make_zip({"bootstrap": f.read(), "data.txt": line + "\n"}, {"bootstrap": 0o755})


# -- nimbusd -------------------------------------------------------------------

class Node(b.Nimbus):
    """invoke_bench's nimbusd, restartable: the log is appended to and the
    port of the newest start is used."""

    def __init__(self, nimbusd, tmp, procs, runtimes_dir=None):
        super().__init__(nimbusd, tmp, procs)
        if runtimes_dir:
            # A nimbusd built elsewhere may name a runtimes directory that is gone.
            self.config += '[worker]\nruntimes_dir = "%s"\n' % runtimes_dir
            with open(self.config_path, "w") as f:
                f.write(self.config)

    def start(self):
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.logf = open(self.log_path, "a")
        self.proc = self.procs.add("nimbusd", subprocess.Popen(
            [self.nimbusd, "--config", self.config_path], stdout=self.logf, stderr=self.logf,
            stdin=subprocess.DEVNULL))
        deadline = time.time() + 30
        while time.time() < deadline:
            with open(self.log_path, errors="replace") as f:
                f.seek(offset)
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("nimbusd did not start:\n" + self.read_log()[-4000:])

    @property
    def data_dir(self):
        return os.path.join(self.dir, "data")

    def push(self, repo_tag, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            with open(path, "rb") as f:
                conn.request("PUT", "/nimbus/images/" + repo_tag, body=f,
                             headers={"Content-Length": str(os.path.getsize(path)),
                                      "Content-Type": "application/x-tar"})
                r = conn.getresponse()
                body = r.read()
        finally:
            conn.close()
        if r.status != 200:
            raise RuntimeError("push %s: %d %s" % (repo_tag, r.status, body[:300]))
        return json.loads(body)

    def create_image_function(self, name, image_uri):
        status, _, body = b.http_call(self.port, "POST", "/2015-03-31/functions", {
            "FunctionName": name, "PackageType": "Image", "Code": {"ImageUri": image_uri},
            "Role": b.ROLE, "MemorySize": 128, "Timeout": 30})
        if status != 201:
            raise RuntimeError("create %s: %d %s" % (name, status, body[:300]))
        return self.wait_ready(name)

    def metrics(self):
        _, _, text = b.http_call(self.port, "GET", "/metrics", timeout=10)
        out = {}
        for key, rx in (("store_reads", r'^nimbus_chunk_cache_reads_total\{tier="store"\} (\d+)'),
                        ("memory_reads", r'^nimbus_chunk_cache_reads_total\{tier="memory"\} (\d+)'),
                        ("fetched_bytes", r"^nimbus_chunk_cache_fetched_bytes_total (\d+)")):
            m = re.search(rx, text.decode(errors="replace"), re.M)
            out[key] = int(m.group(1)) if m else 0
        return out

    def cpu_jiffies(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])


def chunks_dir(data_dir):
    return os.path.join(data_dir, "code", "chunks")


def chunk_bytes(data_dir):
    """Chunks in the store and their sealed bytes."""
    chunks = stored_chunks(chunks_dir(data_dir))
    return len(chunks), sum(chunks.values())


def drop_chunk_pages(data_dir):
    """Evicts the pack files (only those) from the page cache."""
    for path in pack_files(chunks_dir(data_dir)):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# -- measurements --------------------------------------------------------------

def dedup(node, tmp, static_runtime):
    log("dedup: generating the shared 100 MiB layer")
    shared_layer = os.path.join(tmp, "shared-layer.tar")
    entries = [("bin/", None, 0o755), ("bin/runtime", static_runtime, 0o755),
               ("opt/", None, 0o755), ("opt/shared/", None, 0o755)]
    entries += [("opt/shared/f%02d" % i, seeded(100 + i, SHARED_FILE_BYTES), 0o644)
                for i in range(SHARED_FILES)]
    shared_diff = write_layer(shared_layer, entries)
    del entries
    pushes = []
    for i in range(DEDUP_IMAGES):
        own_layer = os.path.join(tmp, "own-layer.tar")
        own_diff = write_layer(own_layer, [("zz/", None, 0o755),
                                           ("zz/unique.bin", seeded(1000 + i, OWN_BYTES), 0o644)])
        archive = os.path.join(tmp, "dedup.tar")
        size = write_docker_save(archive, "dedup%d:v1" % i,
                                 [(shared_layer, shared_diff), (own_layer, own_diff)])
        before = chunk_bytes(node.data_dir)
        t0 = time.perf_counter()
        res = node.push("dedup%d:v1" % i, archive)
        push_s = time.perf_counter() - t0
        after = chunk_bytes(node.data_dir)
        os.unlink(archive)
        os.unlink(own_layer)
        node.create_image_function("dedup-%d" % i, "dedup%d:v1" % i)
        pushes.append({"archive_bytes": size, "image_bytes": res["imageSizeInBytes"],
                       "push_s": b.rnd(push_s), "new_chunks": after[0] - before[0],
                       "new_chunk_bytes": after[1] - before[1]})
        log("  push %d: %.1f MiB archive in %.2f s, %d new chunks (%.1f MiB)" % (
            i, size / MIB, push_s, after[0] - before[0], (after[1] - before[1]) / MIB))
    os.unlink(shared_layer)
    # Every function runs (and reads its own file).
    for i in range(DEDUP_IMAGES):
        status, headers, body = b.http_call(
            node.port, "POST", "/2015-03-31/functions/dedup-%d/invocations" % i,
            {"action": "read", "path": "/zz/unique.bin", "bytes": 0})
        got = json.loads(body) if status == 200 else {}
        if got.get("read") != OWN_BYTES:
            raise RuntimeError("dedup-%d read %s: %d %s" % (i, got, status, body[:200]))
    count, stored = chunk_bytes(node.data_dir)
    unique = SHARED_FILES * SHARED_FILE_BYTES + DEDUP_IMAGES * OWN_BYTES
    logical = sum(p["image_bytes"] for p in pushes)
    res = {
        "images": DEDUP_IMAGES, "functions": DEDUP_IMAGES,
        "shared_bytes": SHARED_FILES * SHARED_FILE_BYTES, "own_bytes_each": OWN_BYTES,
        "runtime_bytes": len(static_runtime),
        "unique_bytes": unique, "image_bytes_total": logical,
        "chunks": count, "stored_bytes": stored,
        "stored_over_unique": b.rnd(stored / unique, 4),
        "stored_over_unique_with_runtime": b.rnd(stored / (unique + len(static_runtime)), 4),
        "stored_over_image_bytes": b.rnd(stored / logical, 4),
        "push_s_median": b.rnd(statistics.median(p["push_s"] for p in pushes)),
        "push_mib_s_median": b.rnd(statistics.median(p["archive_bytes"] / MIB / p["push_s"]
                                                     for p in pushes), 1),
        "pushes": pushes,
        "target_max": TARGETS["dedup_stored_over_unique_max"],
    }
    res["ok"] = res["stored_over_unique"] <= res["target_max"]
    log("dedup: %d chunks, %.1f MiB stored for %.1f MiB unique (%.4f; %.1f MiB of images)"
        % (count, stored / MIB, unique / MIB, res["stored_over_unique"], logical / MIB))
    return res


def timed(node, name, event):
    """One invoke timed from request to response, with nimbusd's CPU and the
    chunk metrics around it."""
    m0, c0 = node.metrics(), node.cpu_jiffies()
    ms, status, headers, body = b.timed_invoke(node.port, name, json.dumps(event).encode())
    c1, m1 = node.cpu_jiffies(), node.metrics()
    if status != 200 or "x-amz-function-error" in headers:
        raise RuntimeError("invoke %s: %d %s" % (name, status, body[:300]))
    return {"ms": ms, "start": headers.get("x-nimbus-start"),
            "phases": b.parse_server_timing(headers.get("server-timing")),
            "nimbusd_cpu_ms": (c1 - c0) * 1000.0 / os.sysconf("SC_CLK_TCK"),
            "store_reads": m1["store_reads"] - m0["store_reads"],
            "fetched_bytes": m1["fetched_bytes"] - m0["fetched_bytes"],
            "answer": json.loads(body)}


def summarize(samples, chunks_total=None):
    cold = [s for s in samples if s["start"] == "cold"]
    ms = [s["ms"] for s in cold]
    names = sorted({k for s in cold for k in s["phases"]})
    res = {
        "n": len(samples), "cold_samples": len(cold), "not_cold": len(samples) - len(cold),
        "p50_ms": b.rnd(statistics.median(ms)) if ms else None,
        "p90_ms": b.rnd(b.percentile(ms, 90)),
        "min_ms": b.rnd(min(ms)) if ms else None, "max_ms": b.rnd(max(ms)) if ms else None,
        "server_timing_p50_ms": {k: b.rnd(statistics.median([s["phases"][k] for s in cold
                                                             if k in s["phases"]]))
                                 for k in names},
        "nimbusd_cpu_ms_p50": b.rnd(statistics.median(s["nimbusd_cpu_ms"] for s in cold))
        if cold else None,
        "store_reads_p50": statistics.median(s["store_reads"] for s in cold) if cold else None,
        "store_reads_max": max(s["store_reads"] for s in cold) if cold else None,
        "fetched_bytes_p50": statistics.median(s["fetched_bytes"] for s in cold) if cold else None,
        "samples_ms": [b.rnd(x) for x in ms],
    }
    if chunks_total:
        res["chunks_total"] = chunks_total
        if cold:
            res["fetched_share_p50"] = b.rnd(res["store_reads_p50"] / chunks_total, 4)
            res["fetched_share_max"] = b.rnd(res["store_reads_max"] / chunks_total, 4)
    return res


def lazy(node, tmp, test_runtime, static_runtime, n, settle):
    log("lazy: generating the 200 MiB image")
    layer = os.path.join(tmp, "big-layer.tar")
    entries = [("bin/", None, 0o755), ("bin/runtime", static_runtime, 0o755),
               ("big/", None, 0o755)]
    entries += [("big/f%02d" % i, seeded(5000 + i, BIG_FILE_BYTES), 0o644)
                for i in range(BIG_FILES)]
    diff = write_layer(layer, entries)
    del entries
    archive = os.path.join(tmp, "big.tar")
    write_docker_save(archive, "big:v1", [(layer, diff)])
    os.unlink(layer)
    res_push = node.push("big:v1", archive)
    os.unlink(archive)
    image_bytes = res_push["imageSizeInBytes"]
    chunks_total = math.ceil(image_bytes / CHUNK)
    node.create_image_function("big", "big:v1")
    for name, line in (("small", "small zip"), ("primer", "primer zip")):
        zp = os.path.join(tmp, name + ".zip")
        with open(zp, "wb") as f:
            f.write(runtime_zip(test_runtime, line))
        node.create(name, "provided", "bootstrap", zp)
        os.unlink(zp)
    small_event = {"action": "read", "path": "data.txt", "bytes": 0}

    def big_event(i):
        return {"action": "read", "path": "/big/f%02d" % (i % BIG_FILES), "bytes": BIG_FILE_BYTES}

    def check(s, want):
        if s["answer"].get("read") != want:
            raise RuntimeError("unexpected answer %s" % s["answer"])

    # Cold node: restart, drop the pack files' pages, prime, then the two
    # functions in alternating order.
    cold = {"small": [], "big": []}
    for i in range(n):
        node.stop()
        node.start()
        node.wait_ready("big")
        drop_chunk_pages(node.data_dir)
        timed(node, "primer", small_event)
        time.sleep(settle)
        order = ("small", "big") if i % 2 == 0 else ("big", "small")
        for name in order:
            s = timed(node, name, small_event if name == "small" else big_event(i))
            check(s, len("small zip\n") if name == "small" else BIG_FILE_BYTES)
            cold[name].append(s)
        log("  cold node %d: small %.1f ms (%s), big %.1f ms (%s, %d chunks fetched)" % (
            i, cold["small"][-1]["ms"], cold["small"][-1]["start"], cold["big"][-1]["ms"],
            cold["big"][-1]["start"], cold["big"][-1]["store_reads"]))
    # Warm cache: the big image's file f00 is read once (its chunks are then in
    # the worker's memory cache); each sample is a new environment.
    timed(node, "big", big_event(0))
    warm = {"small": [], "big": []}
    for i in range(n):
        order = ("small", "big") if i % 2 == 0 else ("big", "small")
        for name in order:
            node.set_variable(name, "cold-%d-%f" % (i, time.time()))
            time.sleep(settle)
            s = timed(node, name, small_event if name == "small" else big_event(0))
            check(s, len("small zip\n") if name == "small" else BIG_FILE_BYTES)
            warm[name].append(s)
        log("  warm cache %d: small %.1f ms (%s), big %.1f ms (%s, %d chunks fetched)" % (
            i, warm["small"][-1]["ms"], warm["small"][-1]["start"], warm["big"][-1]["ms"],
            warm["big"][-1]["start"], warm["big"][-1]["store_reads"]))

    def mode(samples):
        out = {"small_zip": summarize(samples["small"]),
               "big_image": summarize(samples["big"], chunks_total)}
        a, z = out["big_image"]["p50_ms"], out["small_zip"]["p50_ms"]
        out["gap_p50_ms"] = b.rnd(a - z) if a is not None and z is not None else None
        a, z = out["big_image"]["p90_ms"], out["small_zip"]["p90_ms"]
        out["gap_p90_ms"] = b.rnd(a - z) if a is not None and z is not None else None
        out["gap_ok"] = out["gap_p50_ms"] is not None and \
            out["gap_p50_ms"] <= TARGETS["lazy_gap_ms_max"]
        return out

    res = {"big_image": {"bytes": image_bytes, "chunks": chunks_total, "files": BIG_FILES,
                         "file_bytes": BIG_FILE_BYTES, "runtime_bytes": len(static_runtime)},
           "samples": n, "settle_s": settle,
           "cold_node": mode(cold), "warm_cache": mode(warm),
           "target_gap_ms_max": TARGETS["lazy_gap_ms_max"],
           "target_fetched_share_max": TARGETS["lazy_fetched_share_max"]}
    share = res["cold_node"]["big_image"].get("fetched_share_max")
    res["fetched_ok"] = share is not None and share <= TARGETS["lazy_fetched_share_max"]
    return res


# -- report --------------------------------------------------------------------

def print_summary(r):
    d = r["dedup"]
    print("code storage benchmark (%s, %d cores, load %s)" % (
        r["date"], r["machine"]["nproc"], r["machine"]["loadavg_before"]))
    print("  dedup: %d images x (%.0f MiB shared + %.0f MiB own): %d chunks, %.1f MiB stored"
          % (d["images"], d["shared_bytes"] / MIB, d["own_bytes_each"] / MIB, d["chunks"],
             d["stored_bytes"] / MIB))
    print("         stored / unique = %.4f (target <= %.1f: %s); baseline without dedup %.1f MiB"
          " (%.2fx); push median %.2f s (%.0f MiB/s)"
          % (d["stored_over_unique"], d["target_max"], "ok" if d["ok"] else "MISSED",
             d["image_bytes_total"] / MIB, d["image_bytes_total"] / d["unique_bytes"],
             d["push_s_median"], d["push_mib_s_median"]))
    lz = r["lazy"]
    print("  lazy cold start, %d samples; big image %.1f MiB = %d chunks, reads one 5 MiB file:"
          % (lz["samples"], lz["big_image"]["bytes"] / MIB, lz["big_image"]["chunks"]))
    print("    %-11s %-10s %9s %9s %5s %14s %14s  %s" % ("mode", "function", "p50 ms", "p90 ms",
                                                         "cold", "chunks fetched", "nimbusd CPU ms",
                                                         "server phases p50 (ms)"))
    for key in ("cold_node", "warm_cache"):
        m = lz[key]
        for fn in ("small_zip", "big_image"):
            s = m[fn]
            print("    %-11s %-10s %9s %9s %2d/%-2d %14s %14s  %s" % (
                key, fn, s["p50_ms"], s["p90_ms"], s["cold_samples"], s["n"],
                s["store_reads_p50"], s["nimbusd_cpu_ms_p50"],
                " ".join("%s=%s" % kv for kv in s["server_timing_p50_ms"].items())))
        print("    %-11s gap p50 %s ms, p90 %s ms (target p50 <= %.0f: %s)" % (
            key, m["gap_p50_ms"], m["gap_p90_ms"], lz["target_gap_ms_max"],
            "ok" if m["gap_ok"] else "MISSED"))
    bi = lz["cold_node"]["big_image"]
    print("    chunks fetched per cold-node start: p50 %s, max %s of %d = %s (target <= %.0f%%: %s)"
          % (bi["store_reads_p50"], bi["store_reads_max"], bi.get("chunks_total", 0),
             bi.get("fetched_share_max"), 100 * lz["target_fetched_share_max"],
             "ok" if lz["fetched_ok"] else "MISSED"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nimbusd", default=os.path.join(b.ROOT, "build", "bin", "nimbusd"))
    ap.add_argument("--test-runtime", default=os.path.join(b.ROOT, "build", "tests", "test_runtime"))
    ap.add_argument("--static-runtime",
                    default=os.path.join(b.ROOT, "build", "tests", "test_runtime_static"))
    ap.add_argument("--runtimes-dir", default=os.path.join(b.ROOT, "runtimes"),
                    help="[worker] runtimes_dir (empty: nimbusd's built-in default)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--samples", type=int, default=15, help="cold starts per function and mode")
    ap.add_argument("--settle", type=float, default=0.3,
                    help="seconds between a configuration change (or the primer) and a timed cold "
                         "invoke")
    ap.add_argument("--temp", default="/var/tmp", help="directory for the big temporary files")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("code_storage_bench.py needs root (sandboxes, FUSE and erofs mounts)")
    with open(args.static_runtime, "rb") as f:
        static_runtime = f.read()
    tmp = tempfile.mkdtemp(prefix="nimbus-code-storage-bench-", dir=args.temp)
    procs = b.Procs()
    t_start = time.time()
    results = {
        "benchmark": "code_storage",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": dict(b.machine_info(), loadavg_before=os.getloadavg()[0]),
        "method": {
            "dedup": "10 docker-save archives (shared 100 MiB layer: /bin/runtime + 20 x 5 MiB "
                     "random /opt/shared files; own 1 MiB /zz/unique.bin), PUT /nimbus/images, "
                     "10 Image functions; sealed bytes of the chunks in the pack store under "
                     "data_dir/code/chunks over 100 MiB + 10 x 1 MiB",
            "lazy": "Image function (40 x 5 MiB random files + static C runtime) reading one "
                    "5 MiB file vs a provided zip function (C runtime) reading data.txt; "
                    "request-to-response time of cold starts. cold_node: nimbusd restarted and "
                    "the pack files' pages dropped (fadvise) before each sample, a primer "
                    "function invoked first, order alternating; warm_cache: configuration "
                    "change before each sample, chunks in the worker's memory cache",
            "chunks_fetched": "delta of nimbus_chunk_cache_reads_total{tier=\"store\"} around "
                              "the invoke",
        },
    }
    node = Node(args.nimbusd, tmp, procs, args.runtimes_dir)
    try:
        node.start()
        results["dedup"] = dedup(node, tmp, static_runtime)
        results["lazy"] = lazy(node, tmp, args.test_runtime, static_runtime, args.samples,
                               args.settle)
        counts, lines = node.problems()
        results["nimbusd_log"] = {"counts": counts, "lines": lines}
    finally:
        node.stop()
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    results["machine"]["loadavg_after"] = os.getloadavg()[0]
    results["wall_s"] = b.rnd(time.time() - t_start, 1)
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "code_storage.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print_summary(results)
    log("wrote %s (%.0f s)" % (out, results["wall_s"]))


if __name__ == "__main__":
    main()
