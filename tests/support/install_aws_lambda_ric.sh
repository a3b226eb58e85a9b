#!/usr/bin/env bash
# Installs npm's aws-lambda-ric 4.0.2 (AWS's official Node.js runtime client,
# unmodified) into a cache directory for the worker tests, once.
#   install_aws_lambda_ric.sh <cache-dir>
# Exit status 0 when <cache-dir>/node_modules/aws-lambda-ric is usable.
set -euo pipefail
dir="$1"
marker="$dir/node_modules/aws-lambda-ric/package.json"
if [ -f "$marker" ] && grep -q '"version": "4.0.2"' "$marker" \
  && [ -f "$dir/node_modules/aws-lambda-ric/rapid-client.node" ]; then
  exit 0
fi
mkdir -p "$dir"
cd "$dir"
# Its install scripts build the native client (rapid-client.node) from the
# curl and aws-lambda-cpp sources shipped in the package: cmake and a C++
# compiler, about a minute.
timeout 600 npm install --no-audit --no-fund --prefix "$dir" aws-lambda-ric@4.0.2 >&2
test -f "$dir/node_modules/aws-lambda-ric/rapid-client.node"
