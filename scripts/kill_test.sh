#!/usr/bin/env bash
# Kill test (issue: hardening): SIGKILLs `invp train`, `invp embed` and `invp index add` at
# random moments, reruns each until it finishes, and checks that the result equals an
# uninterrupted run: training bitwise (model.pt), embeddings and index contents equal (h5diff when available,
# else the invp JSON views).
# Usage: scripts/kill_test.sh [INVP] [KILLS]   (default ./build/invp, 5 kills per command)
set -u
INVP=${1:-./build/invp}
KILLS=${2:-5}
DATA=${INVP_KILL_DATA:-/usr/share/datasets/fashion-mnist}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
fail=0
T="--data $DATA:train --limit 6144 --epochs 4 --width 8 --dim 32 --batch-size 128 --background 512 --warmup 1 --knn-every 0"

run_killed() {  # run_killed LOG CMD... : rerun CMD, killing it after a random delay, KILLS times, then let it finish
  local log=$1; shift
  for i in $(seq 1 "$KILLS"); do
    "$@" > /dev/null 2>> "$log" &
    local pid=$!
    local delay; delay=$(awk -v s="$RANDOM" 'BEGIN{srand(s); printf "%.2f", 1 + rand()*7}')
    sleep "$delay"
    if kill -9 "$pid" 2>/dev/null; then echo "  killed after ${delay}s" >> "$log"; fi
    wait "$pid" 2>/dev/null && return 0  # it finished before the kill: done
  done
  "$@" > /dev/null 2>> "$log"
}

echo "train: uninterrupted reference"
"$INVP" -q --threads 2 train $T --out "$work/ref" || exit 1
echo "train: $KILLS random SIGKILLs, resuming each time"
run_killed "$work/train.log" "$INVP" -q --threads 2 train $T --out "$work/killed"
grep -c killed "$work/train.log" | sed 's/^/  kills that landed: /'
# model.pt must be byte-identical. checkpoint.pt's bytes are not comparable: LibTorch keys
# the SGD state by tensor address, so its order varies between processes; its bank, graph
# and weights are compared tensor by tensor in tests/train (Trainer.ResumeEquals...).
if cmp -s "$work/ref/model.pt" "$work/killed/model.pt"; then echo "  model.pt: bitwise equal"; else echo "  model.pt: DIFFERS"; fail=1; fi

echo "embed: reference and killed runs"
E="embed --model $work/ref/model.pt --data $DATA:train --chunk-rows 2048 --batch-size 256"
"$INVP" -q --threads 2 $E --out "$work/ref.h5" || exit 1
run_killed "$work/embed.log" "$INVP" -q --threads 2 $E --out "$work/killed.h5"
grep -c killed "$work/embed.log" | sed 's/^/  kills that landed: /'
compare_h5() {  # equal datasets (attributes such as `created` may differ); needs hdf5-tools
  command -v h5diff > /dev/null || { echo "  (install hdf5-tools for h5diff)"; return 1; }
  for d in /embeddings /ids /paths /labels /categories; do h5diff -q "$1" "$2" "$d" "$d" || return 1; done
}
if compare_h5 "$work/ref.h5" "$work/killed.h5"; then echo "  embeddings: equal contents"; else echo "  embeddings: DIFFER"; fail=1; fi

echo "index add: reference and killed runs"
"$INVP" -q index build --embeddings "$work/ref.h5" --out "$work/idx-ref" --recipe ivf-flat > /dev/null || exit 1
cp -r "$work/idx-ref" "$work/idx-killed"
"$INVP" -q index add --index "$work/idx-ref" "$DATA:test" > /dev/null || exit 1
run_killed "$work/add.log" "$INVP" -q index add --index "$work/idx-killed" "$DATA:test"
# A killed add never commits (index.json is written last), so the index holds exactly one
# copy of the new items once an add has finished.
sz_ref=$("$INVP" --json index info "$work/idx-ref" | grep -o '"size":[0-9]*')
sz_k=$("$INVP" --json index info "$work/idx-killed" | grep -o '"size":[0-9]*')
echo "  sizes: reference $sz_ref, killed $sz_k"
q=$("$INVP" -q --json query --index "$work/idx-ref" --id 60005 -k 10 | grep -o '"id":[0-9]*' | tr '\n' ' ')
qk=$("$INVP" -q --json query --index "$work/idx-killed" --id 60005 -k 10 | grep -o '"id":[0-9]*' | tr '\n' ' ')
if [ "$q" = "$qk" ]; then echo "  query results after add: equal"; else echo "  query results: DIFFER"; fail=1; fi
[ $fail -eq 0 ] && echo "kill test: PASS" || echo "kill test: FAIL"
exit $fail
