#!/usr/bin/env bash
# Runs the whole test suite: every unit test case and the integration tests,
# through ctest. Installs and builds first.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build.sh"
cd "${NIMBUS_BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "$(nproc)" "$@"
