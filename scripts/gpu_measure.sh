#!/usr/bin/env bash
# On the GPU machine, after scripts/gpu_build.sh: the figures of BENCHMARKS.md's GPU section.
#   graph   the per-epoch kNN graph on the GPU: 60k synthetic rows against CPU FAISS (agreement
#           and time), and 1M synthetic 128-d rows (time)
#   step    bench_train_step on the paper preset: the step with per-parameter SGD, the fused
#           SGD and CUDA graphs (--sgd loop|foreach|graph), and the epoch checkpoint's stall
#   train   configs/fashion-mnist-gpu.toml (ResNet-18, 32 px, batch 128) on Fashion-MNIST:
#           A  the preset as it is, 10 epochs, GPU utilisation sampled by nvidia-smi, then the
#              weighted kNN top-1 of its model (K 200, sigma 0.07, train features vs test);
#           A0 as A with --cuda-graph off, 5 epochs (the eager step's utilisation);
#           B  --profile --warmup 1, 3 epochs: the per-phase breakdown (GPU synchronised at
#              each phase), L_inv on from epoch 2;
#           C  as B with --precision fp32: TF32's effect on time and on the losses.
# Usage: bash scripts/gpu_measure.sh [graph] [step] [train]   (default all three)
#   FM=DIR  Fashion-MNIST's IDX files (default .gpu-deps/fashion-mnist, from gpu_bundle.sh)
#   OUT=DIR where logs and run directories go (default /tmp/invp-gpu-out)
#   SKIP_FP32=1 leaves out run C
set -uo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build-cuda}
fm=${FM:-.gpu-deps/fashion-mnist}
out=${OUT:-/tmp/invp-gpu-out}
mkdir -p "$out"
# shellcheck disable=SC1091
source /tmp/invp-gpu-deps/env.sh
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(graph step train)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
echo "cpus $(nproc)"

# Trains OUT_DIR with the GPU preset and extra flags until it has written N epochs (then
# SIGINT: the checkpoint is kept) or LIMIT seconds passed.
train_epochs() {
  local dir=$1 n=$2 limit=$3; shift 3
  rm -rf "$dir"
  "$build/invp" --threads 8 --config configs/fashion-mnist-gpu.toml train --out "$dir" \
      --data "$fm:train" --test-data "$fm:test" --workers 6 "$@" > "$dir.log" 2>&1 &
  local pid=$! t=0
  while kill -0 $pid 2>/dev/null; do
    if [ -f "$dir/metrics.jsonl" ] && [ "$(wc -l < "$dir/metrics.jsonl")" -ge "$n" ]; then break; fi
    if [ $t -ge $((limit * 2)) ]; then echo "train $dir: stopped at the ${limit}s limit"; break; fi
    sleep 0.5; t=$((t + 1))
  done
  kill -INT $pid 2>/dev/null; wait $pid
  tail -n 3 "$dir.log"
}

summary() {  # per-epoch table of a run's metrics.jsonl
  python3 - "$1" <<'EOF'
import json, sys
print(f"{'epoch':>5} {'s':>6} {'img/s':>7} {'data':>6} {'fwd':>6} {'bwd+opt':>7} {'method':>6} {'graph':>6} {'ckpt':>6} {'loss':>8} {'ins':>8} {'inv':>8}")
for l in open(sys.argv[1] + "/metrics.jsonl"):
    m = json.loads(l); t = m["time"]
    print(f"{m['epoch']:5d} {m['seconds']:6.2f} {m['images_per_second']:7.0f} {t['data_wait']:6.2f} {t['forward']:6.2f} "
          f"{t['backward']:7.2f} {t['bank_graph_loss']:6.2f} {m['graph']['build_seconds']:6.2f} {t.get('checkpoint', 0):6.3f} "
          f"{m['loss']:8.4f} {m['loss_ins']:8.4f} {m['loss_inv']:8.4f}")
EOF
}

# train_epochs with GPU utilisation sampled every 200 ms by nvidia-smi, then the per-epoch table
# and the mean utilisation over epochs 2.. (epoch 1 holds start-up and cuDNN's algorithm search).
util_run() {
  local name=$1; shift
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > "$out/util-$name.txt" &
  local smi=$!
  train_epochs "$out/$name" "$@"
  kill $smi
  summary "$out/$name"
  python3 - "$out" "$name" <<'EOF'
import json, sys
out, name = sys.argv[1:3]
ms = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
u = [float(x) for x in open(f"{out}/util-{name}.txt") if x.strip().replace('.', '').isdigit()]
total = sum(m["seconds"] for m in ms)
skip = ms[0]["seconds"] / total if total else 0
tail = u[int(len(u) * skip) + 5:-5] if len(u) > 20 else u
print(f"{name}: GPU utilisation, epochs 2-{len(ms)}: mean {sum(tail)/max(1,len(tail)):.1f} % over {len(tail)} samples "
      f"(min {min(tail, default=0):.0f} %)")
EOF
}

for stage in "${stages[@]}"; do
  case $stage in
  graph)
    echo "== graph: 60k synthetic rows, GPU against CPU FAISS (16 threads)"
    "$build/bench_graph" --synthetic 60000 --device cuda --check --reps 5 --threads "$(nproc)"
    echo "== graph: 1M synthetic 128-d rows on the GPU"
    "$build/bench_graph" --synthetic 1000000 --device cuda --reps 3 --threads "$(nproc)"
    ;;
  step)
    for sgd in loop foreach graph graph foreach; do
      echo "== step: bench_train_step --preset paper --device cuda --sgd $sgd"
      "$build/bench_train_step" --preset paper --device cuda --sgd $sgd --steps 100 --warmup 10 --threads 8 | tail -n 1
    done
    echo "== step: the epoch checkpoint's stall"
    "$build/bench_train_step" --preset both --device cuda --checkpoint --reps 5 --threads 8
    ;;
  train)
    echo "== train A: the preset, 10 epochs, GPU utilisation sampled every 200 ms"
    util_run A 10 240 --knn-every 0
    "$build/invp" --threads "$(nproc)" -q eval knn -m "$out/A/model.pt" --train "$fm:train" \
        --test "$fm:test" --device cuda
    echo "== train A0: as A with --cuda-graph off, 5 epochs"
    util_run A0 5 120 --knn-every 0 --cuda-graph off
    echo "== train B: --profile --warmup 1, 3 epochs"
    train_epochs "$out/B" 3 120 --knn-every 0 --profile --warmup 1
    summary "$out/B"
    if [ -z "${SKIP_FP32:-}" ]; then
      echo "== train C: as B, --precision fp32"
      train_epochs "$out/C" 3 150 --knn-every 0 --profile --warmup 1 --precision fp32
      summary "$out/C"
    fi
    ;;
  *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
