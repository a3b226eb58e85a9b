#!/usr/bin/env python3
"""Big image check (issue 6: "10 GB images are accepted without loading them
into memory"), through one real nimbusd:

  1. A `docker save` archive of about 10 GB is written by hand: one layer with
     the static C test runtime (/bin/runtime), a file of SIZE bytes of zeros
     (/big/zero.bin; default 9.3e9 bytes, so the archive stays under the
     default 10 GiB image limit) and 64 random bytes after it in the image
     layout (/big/zz-tail.bin). The zeros are holes in the archive file, so it
     takes almost no disk; nimbusd still reads, spools, unpacks, flattens,
     chunks and seals every byte.
  2. It is pushed with PUT /nimbus/images/{repo}:{tag} (bench auth off, as in
     invoke_bench.py), an Image function is created from it and invoked: it
     reads /big/zz-tail.bin (the last chunks of the image, loaded lazily) and
     the first 1 MiB of /big/zero.bin; the answers' byte counts and checksums
     are checked.

Reported: archive and image sizes, push time and throughput, nimbusd's peak
RSS (VmHWM) before and after the push and its growth, the chunk store's size
after the push (the zeros deduplicate to one chunk), chunks fetched by the
cold start, and the invoke answers. Writes OUT/big_image.json.
Needs root and ~3x SIZE of free disk under --tmp for nimbusd's spool, staging
tree and image (removed afterwards).

  bench/big_image_bench.py [--nimbusd PATH] [--static-runtime PATH]
                           [--size BYTES] [--tmp DIR] [--out DIR]
"""

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import invoke_bench as b  # noqa: E402
import code_storage_bench as cs  # noqa: E402

MTIME = 1577836800
BLOCK = 512


def log(msg):
    print("[big_image_bench] " + msg, file=sys.stderr, flush=True)


def tar_header(name, size, mode=0o644, typeflag=b"0"):
    """One ustar header block."""
    h = bytearray(BLOCK)

    def put(off, width, value):
        h[off:off + len(value)] = value[:width]

    put(0, 100, name.encode())
    put(100, 8, b"%07o\0" % mode)
    put(108, 8, b"%07o\0" % 0)
    put(116, 8, b"%07o\0" % 0)
    if size <= 0o77777777777:
        put(124, 12, b"%011o\0" % size)
    else:
        # Past 8 GiB: GNU base-256 (the high bit of the first byte set).
        put(124, 12, b"\x80" + size.to_bytes(11, "big"))
    put(136, 12, b"%011o\0" % MTIME)
    put(148, 8, b" " * 8)
    put(156, 1, typeflag)
    put(257, 8, b"ustar\x0000")
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def padding(size):
    return (BLOCK - size % BLOCK) % BLOCK


class Writer:
    """Writes an outer tar; zeros become holes (seek), everything is hashed
    by the hashers that are active."""

    def __init__(self, f):
        self.f = f
        self.hashers = []

    def data(self, buf):
        self.f.write(buf)
        for h in self.hashers:
            h.update(buf)

    def zeros(self, n):
        self.f.seek(n, os.SEEK_CUR)
        if self.hashers:
            z = bytes(1 << 20)
            left = n
            while left:
                k = min(left, len(z))
                for h in self.hashers:
                    h.update(z[:k])
                left -= k


def layer_entries(runtime, size, tail):
    return [("bin/", None, 0o755), ("bin/runtime", runtime, 0o755), ("big/", None, 0o755),
            ("big/zero.bin", size, 0o644), ("big/zz-tail.bin", tail, 0o644)]


def layer_size(entries):
    n = 0
    for _, data, _ in entries:
        n += BLOCK
        if data is None:
            continue
        length = data if isinstance(data, int) else len(data)
        n += length + padding(length)
    return n + 2 * BLOCK


def write_archive(path, tag, runtime, size, tail):
    entries = layer_entries(runtime, size, tail)
    lsize = layer_size(entries)
    with open(path, "wb") as f:
        w = Writer(f)
        w.data(tar_header("l0/", 0, 0o755, b"5"))
        w.data(tar_header("l0/layer.tar", lsize))
        diff = hashlib.sha256()
        w.hashers.append(diff)
        for name, data, mode in entries:
            if data is None:
                w.data(tar_header(name, 0, mode, b"5"))
                continue
            length = data if isinstance(data, int) else len(data)
            w.data(tar_header(name, length, mode))
            if isinstance(data, int):
                w.zeros(length)
            else:
                w.data(data)
            w.zeros(padding(length))
        w.zeros(2 * BLOCK)
        w.hashers.clear()
        w.zeros(padding(lsize))
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/runtime"], "Env": ["PATH=/usr/bin:/bin"],
                       "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff.hexdigest()]},
        }).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                                "Layers": ["l0/layer.tar"]}]).encode()
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            w.data(tar_header(name, len(data)))
            w.data(data)
            w.zeros(padding(len(data)))
        w.zeros(2 * BLOCK)
        f.truncate(f.tell())
    return os.path.getsize(path), lsize


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def xor_words(data):
    s = 0
    for (w,) in struct.iter_unpack("<Q", data):
        s ^= w
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nimbusd", default=os.path.join(cs.b.ROOT, "build", "bin", "nimbusd"))
    ap.add_argument("--static-runtime",
                    default=os.path.join(cs.b.ROOT, "build", "tests", "test_runtime_static"))
    ap.add_argument("--size", type=int, default=9_300_000_000)
    ap.add_argument("--tmp", default="/var/tmp")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="nimbus-big-image-", dir=args.tmp)
    procs = b.Procs()
    result = {"benchmark": "big_image", "machine": b.machine_info(), "size": args.size}
    try:
        with open(args.static_runtime, "rb") as f:
            runtime = f.read()
        tail = os.urandom(64)
        archive = os.path.join(tmp, "big.tar")
        t0 = time.time()
        archive_bytes, layer_bytes = write_archive(archive, "big:v1", runtime, args.size, tail)
        log("archive: %.2f GB (layer %.2f GB), %.1f MB on disk, written in %.1fs" % (
            archive_bytes / 1e9, layer_bytes / 1e9,
            os.stat(archive).st_blocks * 512 / 1e6, time.time() - t0))
        result["archive_bytes"] = archive_bytes
        result["archive_disk_bytes"] = os.stat(archive).st_blocks * 512

        node = cs.Node(args.nimbusd, tmp, procs, os.path.join(cs.b.ROOT, "runtimes"))
        node.start()
        rss_before = vm_hwm_kib(node.proc.pid)
        t0 = time.time()
        pushed = node.push("big:v1", archive)
        push_s = time.time() - t0
        rss_after = vm_hwm_kib(node.proc.pid)
        chunks, chunk_bytes = cs.chunk_bytes(node.data_dir)
        log("push: %.1fs (%.0f MB/s), answer %s" % (push_s, archive_bytes / push_s / 1e6, pushed))
        log("nimbusd peak RSS: %d MiB before, %d MiB after the push" % (
            rss_before >> 10, rss_after >> 10))
        result.update({
            "push_seconds": round(push_s, 1),
            "push_mb_per_s": round(archive_bytes / push_s / 1e6, 1),
            "push_answer": pushed,
            "nimbusd_peak_rss_mib_before": rss_before >> 10,
            "nimbusd_peak_rss_mib_after": rss_after >> 10,
            "nimbusd_peak_rss_growth_mib": (rss_after - rss_before) >> 10,
            "chunk_files": chunks,
            "chunk_store_bytes": chunk_bytes,
        })

        node.create_image_function("big", "big:v1")
        m0 = node.metrics()
        status, _, body = b.http_call(node.port, "POST", "/2015-03-31/functions/big/invocations",
                                      {"action": "read", "path": "/big/zz-tail.bin"}, timeout=120)
        tail_answer = json.loads(body)
        status2, _, body2 = b.http_call(node.port, "POST",
                                        "/2015-03-31/functions/big/invocations",
                                        {"action": "read", "path": "/big/zero.bin",
                                         "bytes": 1 << 20}, timeout=120)
        zero_answer = json.loads(body2)
        m1 = node.metrics()
        ok = (status == 200 and tail_answer == {"read": 64, "sum": xor_words(tail)}
              and status2 == 200 and zero_answer == {"read": 1 << 20, "sum": 0})
        result.update({
            "image_bytes": pushed.get("imageSizeInBytes"),
            "invoke_tail": tail_answer, "invoke_zero": zero_answer, "answers_ok": ok,
            "chunks_fetched": m1["store_reads"] - m0["store_reads"],
        })
        log("invoke: tail %s, zero %s -> %s; %d chunks fetched" % (
            tail_answer, zero_answer, "ok" if ok else "WRONG", result["chunks_fetched"]))
        node.stop()
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "big_image.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0 if result.get("answers_ok") else 1


if __name__ == "__main__":
    sys.exit(main())
