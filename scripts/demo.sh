#!/usr/bin/env bash
# Set up, build and run `invp demo` on the default data (the README's first command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target invp_cli
./build/invp demo "$@"
