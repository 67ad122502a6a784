#!/usr/bin/env bash
# Data-parallel training against one process on this machine, alternated in one run: the
# Fashion-MNIST CPU preset's network and method (configs/fashion-mnist.toml) at 1 rank × 2
# threads and at 2 ranks × 1 thread (--nproc 2), the latter with gradient buckets started during
# backward (2x1, the default) and after it (2x1-seq, --no-grad-overlap), on the first LIMIT training images for 2
# epochs (the second has L_inv and a graph rebuild, as most of a preset run does). Prints, per
# run, epoch 2's images/s and its time per phase (rank 0's; allreduce and all-gathers apart)
# and the bytes rank 0's collectives carried, per epoch and per step.
# Usage: bench/bench_dist_train.sh [INVP=build/invp] [LIMIT=12800] [REPEATS=3] [extra train flags…]
set -euo pipefail
INVP=${1:-build/invp}; LIMIT=${2:-12800}; REPEATS=${3:-3}; shift $(( $# < 3 ? $# : 3 ))
CONFIG=$(cd "$(dirname "$0")/.." && pwd)/configs/fashion-mnist.toml
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $("$INVP" --version | head -1)"
echo "# preset network on $LIMIT images, global batch 128, epoch 2 (L_inv on); $* "
printf '%-8s %9s %8s %8s %8s %8s %8s %8s %8s %10s %10s\n' layout img/s epoch_s data fwd bwd+opt method allred gather MB/epoch KB/step
run() {  # run LAYOUT NPROC [train flags…]
  local name=$1 nproc=$2
  shift 2
  rm -rf "$work/r"
  "$INVP" -q --threads 2 --config "$CONFIG" train --out "$work/r" --limit "$LIMIT" --epochs 2 --warmup 1 \
    --knn-every 0 --precision fp32 --nproc "$nproc" "$@" "${EXTRA[@]}" > /dev/null 2>&1
  local steps=$((LIMIT / 128))
  tail -1 "$work/r/metrics.jsonl" | python3 -c '
import json, sys
m = json.load(sys.stdin); t = m["time"]; d = m.get("dist", {})
b = d.get("bytes", 0)
print("%-8s %9.0f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %10.2f %10.1f" % (sys.argv[1], m["images_per_second"],
      m["seconds"], t["data_wait"], t["forward"], t["backward"], t["bank_graph_loss"], d.get("allreduce_seconds", 0),
      d.get("allgather_seconds", 0), b / 1e6, b / 1e3 / int(sys.argv[2])))' "$name" "$steps"
}
EXTRA=("$@")
for _ in $(seq "$REPEATS"); do
  run "1x2" 1
  run "2x1" 2
  run "2x1-seq" 2 --no-grad-overlap
done
