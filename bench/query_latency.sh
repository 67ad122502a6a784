#!/usr/bin/env bash
# One-image `invp query` latency, with and without the resident heap (INVP_RESIDENT_HEAP),
# at one thread and at the default thread count, alternating so that noise hits all four.
# Prints invp's own after-start-up timings and the whole-process wall time per run.
# Usage: bench/query_latency.sh INVP INDEX_DIR IMAGE [ROUNDS (5)]
set -euo pipefail
invp=$1 index=$2 image=$3 rounds=${4:-5}
now() { date +%s.%N; }
for ((r = 0; r < rounds; ++r)); do
  for th in 1 default; do
    targ=(); [ "$th" = 1 ] && targ=(--threads 1)
    for heap in 1 0; do
      s=$(now)
      out=$(INVP_RESIDENT_HEAP=$heap "$invp" -q "${targ[@]}" --json query --index "$index" "$image" -k 10)
      wall=$(echo "$(now) - $s" | bc)
      echo "$out" | python3 -c "import json,sys; t=json.load(sys.stdin)['timings_ms']; print('threads %-7s resident-heap %s  load %4.0f  embed %4.0f  search %4.0f  total %4.0f ms  whole process %.2f s' % ('$th', '$heap', t['load'], t['embed'], t['search'], t['total'], $wall))"
    done
  done
done
