#!/usr/bin/env bash
# Installs every system package invp needs on Debian bookworm (run as root; idempotent).
# OpenBLAS is the OpenMP build on purpose: Debian's reference BLAS makes exact kNN far slower
# and the pthread build oversubscribes the cores under FAISS's OpenMP (docs/ARCHITECTURE.md, "Threads").
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config ccache
  libtorch-dev libgloo-dev libfaiss-dev
  libopencv-dev
  libhdf5-dev libcli11-dev libgtest-dev
  libopenblas0-openmp libopenblas-openmp-dev
  nlohmann-json3-dev zlib1g-dev libxxhash-dev
  hdf5-tools
  dataset-fashion-mnist
  libcpp-httplib-dev chromium
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The pthread OpenBLAS would win Debian's alternatives over the OpenMP one: refuse to run with it.
if dpkg-query -W -f='${Status}' libopenblas0-pthread 2>/dev/null | grep -q 'ok installed'; then
  echo "setup: warning: libopenblas0-pthread is installed and outranks libopenblas0-openmp;" \
       "remove it (apt-get remove libopenblas0-pthread) for fast kNN" >&2
fi
# puppeteer-core drives the system chromium in the browser test (tests/serve); its own browser
# download is skipped, and it lives in a git-ignored folder beside the sources.
if command -v npm >/dev/null; then
  root="$(cd "$(dirname "$0")/.." && pwd)"
  if [ ! -d "$root/third_party/node/node_modules/puppeteer-core" ]; then
    mkdir -p "$root/third_party/node"
    PUPPETEER_SKIP_DOWNLOAD=1 npm install --prefix "$root/third_party/node" --no-audit --no-fund \
      --silent puppeteer-core@22.15.0
  fi
else
  echo "setup: warning: npm not found; the browser test (tests/serve) will be skipped" >&2
fi
echo "setup: all system packages present"
