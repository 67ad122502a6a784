#!/usr/bin/env bash
# On the GPU machine (CUDA + PyTorch's CUDA LibTorch, no Debian packages, no network):
# unpacks the Debian packages that scripts/gpu_bundle.sh made here, builds invp against the
# CUDA LibTorch (INVP_WITH_CUDA turns on by itself) and runs the tests; the CUDA agreement
# tests (graph and loss, CPU vs GPU) run there instead of skipping.
# Usage: bash scripts/gpu_build.sh [BUILD_DIR (default build-cuda)] [ctest args...]
#   The parts .gpu-deps/part-* may arrive over several calls: each call appends its parts to
#   /tmp/invp-gpu-parts; the tree is unpacked once all of them are there.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cuda}; shift || true
deps=/tmp/invp-gpu-deps
if [ ! -d "$deps/root" ]; then
  mkdir -p /tmp/invp-gpu-parts "$deps"
  cp .gpu-deps/part-* /tmp/invp-gpu-parts/ 2>/dev/null || true
  cat /tmp/invp-gpu-parts/part-* | zstd -dc | tar -C "$deps" -xf -
fi
root=$deps/root
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu/openblas-openmp:$root/usr/lib/x86_64-linux-gnu/hdf5/serial:${LD_LIBRARY_PATH:-}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DINVP_BUILD_TESTS=ON -DINVP_BUILD_BENCH=ON \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$root/usr;$root/usr/lib/x86_64-linux-gnu/cmake" \
  -DCMAKE_FIND_ROOT_PATH="$root" -DHDF5_ROOT="$root/usr/lib/x86_64-linux-gnu/hdf5/serial" \
  -DCMAKE_CXX_FLAGS="-isystem $root/usr/include -isystem $root/usr/include/hdf5/serial" \
  -DCMAKE_EXE_LINKER_FLAGS="-L$root/usr/lib/x86_64-linux-gnu -Wl,-rpath-link,$root/usr/lib/x86_64-linux-gnu"
cmake --build "$build" -j "$(nproc)"
"$build/invp" --version
ctest --test-dir "$build" --output-on-failure -j 4 "$@"
