#!/usr/bin/env bash
# Installs Nimbus's build and test dependencies from Debian 12's apt repositories.
# Idempotent: when every package is already installed it only checks and returns.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libcaf-dev            # CAF 0.17.6: the actor system
  libboost-dev          # Boost.Beast/Asio: HTTP server and client
  libsimdjson-dev       # JSON parsing of API bodies
  libspdlog-dev         # logging
  doctest-dev           # unit tests
  libssl-dev            # SHA-256, HMAC (SigV4), AES-GCM
  libtomlplusplus-dev   # TOML config files
  libzip-dev            # reading function code archives
  libseccomp-dev        # the sandbox's syscall filter
  libarchive-dev        # reading container image archives (docker save, OCI; tar, gzip, zstd)
  erofs-utils           # mkfs.erofs builds function images; fsck.erofs extracts them without a mount
  fuse3 libfuse3-dev    # lazy loading: code images served through FUSE
  bubblewrap            # baseline for the sandbox benchmark
  awscli                # /usr/bin/aws (AWS CLI v2) for the integration tests
  zip unzip curl python3 procps
)

# Node.js runs the node runtime and npm installs aws-lambda-ric for a test.
# Our machines come with Node.js 20 and npm; elsewhere take Debian's.
if ! command -v node >/dev/null 2>&1; then packages+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then packages+=(npm); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "installing: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
