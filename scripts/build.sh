#!/usr/bin/env bash
# Configures and builds Nimbus into build/ (installing dependencies first).
# Extra arguments go to the CMake configure step, e.g. -DNIMBUS_SANITIZE=ON.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
build="${NIMBUS_BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${NIMBUS_BUILD_TYPE:-RelWithDebInfo}" "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
