#!/usr/bin/env bash
# Starts a single-node Nimbus on the embedded defaults (API on 127.0.0.1:9000,
# state in ./.nimbus-data), installing and building on first run.
# Arguments go to nimbusd, e.g. --config my.toml.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build.sh"
exec "${NIMBUS_BUILD_DIR:-$root/build}/bin/nimbusd" "$@"
