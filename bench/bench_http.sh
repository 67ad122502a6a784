#!/usr/bin/env bash
# Loopback load benchmark of `invp serve` against `query --serve` and one-shot `invp query`
# (bench_http.mjs): every cell is bounded by --seconds and --max requests.
# Usage: bench/bench_http.sh INVP INDEX_DIR [node options: --seconds S --max N --soak S]
# e.g.   bench/bench_http.sh build/invp invp-demo/index        (index from `invp demo`)
# Query images: the demo's queries/ beside the index if present, else none (by id only is not
# offered: the image cells are the point).
set -euo pipefail
invp=$(realpath "$1") idx=$2
shift 2
imgs=("$(dirname "$idx")"/queries/*.png)
[ -e "${imgs[0]}" ] || { echo "bench_http: no query images in $(dirname "$idx")/queries (run invp demo)" >&2; exit 2; }
exec node "$(dirname "$0")/bench_http.mjs" "$invp" "$idx" "${imgs[@]}" "$@"
