#!/usr/bin/env bash
# Runs every benchmark in one go and writes bench/results/<name>.json.
# Baselines are measured in the same run (machines are shared and noisy:
# compare the ratios and medians, not single absolute times). Needs root.
#   bench/run.sh [iterations]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build.sh"
build="${NIMBUS_BUILD_DIR:-$root/build}"
out="$root/bench/results"
mkdir -p "$out"
n="${1:-30}"
"$build/bench/sandbox_bench" "$n" "$build/bin/nimbus-jail" "$build/bench/ready_probe" \
  "$build/tests/test_runtime" "$root/runtimes" | tee "$out/sandbox.json"
# Invoke through the HTTP API next to nginx (and serverless-offline when npm is
# reachable): writes invoke.json and invoke.png (see bench/README.md).
python3 "$root/bench/invoke_bench.py" --nimbusd "$build/bin/nimbusd" \
  --test-runtime "$build/tests/test_runtime" --out "$out"
# The durable log's group commit next to the disk's raw fsync rate, on disk
# (/var/tmp: /tmp may be tmpfs, where fsync costs nothing).
"$build/bench/durable_log_bench" /var/tmp | tee "$out/durable_log.json"
# Async invoke: durable 202s/s through the HTTP API next to the raw fsync rate
# of nimbusd's data directory, and accept-to-handler latency: async.json.
python3 "$root/bench/async_bench.py" --nimbusd "$build/bin/nimbusd" \
  --test-runtime "$build/tests/test_runtime" --out "$out"
# Code store ingest (chunk, seal, store, manifest) in MiB per CPU second next
# to raw SHA-256 + AES-256-GCM over the same data, and dedup: code_store.json.
BENCH_OUT="$out/code_store.json" "$build/bench/code_store_bench" /var/tmp 256 5
# Lazy images: cold mount of a 200 MB erofs image through FUSE + reading one
# 5 MB file, next to a tiny image; chunks fetched and extra time (on disk:
# /var/tmp holds the images while they are built).
BENCH_OUT="$out/lazy_image.json" "$build/bench/lazy_image_bench" 15 /var/tmp
# Code storage end to end through nimbusd: dedup of 10 pushed images sharing a
# 100 MiB layer, and cold starts of a 200 MiB lazily loaded image next to a
# small zip function (cold node and warm chunk cache): code_storage.json.
python3 "$root/bench/code_storage_bench.py" --nimbusd "$build/bin/nimbusd" \
  --test-runtime "$build/tests/test_runtime" \
  --static-runtime "$build/tests/test_runtime_static" --out "$out"
