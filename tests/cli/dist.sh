#!/usr/bin/env bash
# Data-parallel `invp train` as a user launches it, 2 ranks × 1 thread on 127.0.0.1, every run
# bounded by `timeout`: two shells with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set by hand give
# the same model as `--nproc 2`; a rank with another config is refused by both; a hung rank
# stops the other within --dist-timeout; SIGKILL of one rank under --nproc stops the job, and
# rerunning the command resumes to the bitwise-same model as an uninterrupted run.
# Usage: dist.sh PATH_TO_INVP
set -u
INVP=${1:?usage: dist.sh PATH_TO_INVP}
FM=/usr/share/datasets/fashion-mnist
if [ ! -d "$FM" ]; then echo "dist.sh: $FM absent (dataset-fashion-mnist); skipped"; exit 0; fi
work=$(mktemp -d); echo "dist.sh: work in $work"; trap 'pkill -9 -f "$work" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
pass=0; fail=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $name"; fi
}
port() { echo $((20000 + (RANDOM * 7 + $$) % 40000)); }
args=(train --data "$FM:train" --limit 1536 --width 8 --batch-size 64 --background 256 --knn-every 0
      --warmup 1 --epochs 3)
# rank R PORT OUT [extra args…]: one rank started by hand, as a second shell would.
rank() {
  local r=$1 p=$2 out=$3; shift 3
  RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$p \
    timeout 120 "$INVP" --threads 1 "${args[@]}" --out "$out" "$@"
}
rank_pids() {  # rank_pids OUT R: the processes of rank R of the job writing OUT (with its `timeout`)
  for p in $(pgrep -f -- "--out $1"); do
    tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "RANK=$2" && echo "$p"
  done
}

check "version names the c10d backends" sh -c "'$INVP' --version | grep -q 'c10d .*gloo'"

# --nproc 2, uninterrupted: the reference.
timeout 180 "$INVP" --threads 2 "${args[@]}" --nproc 2 --out "$work/ref" > "$work/ref.log" 2>&1; rc=$?
check "--nproc 2 exits 0" test $rc -eq 0
check "--nproc prefixes rank 0's lines" grep -q '^\[rank 0\] invp: epoch 3' "$work/ref.log"
check "only rank 0 logs epochs" sh -c "! grep -q '^\[rank 1\] invp: epoch' '$work/ref.log'"
check "three metrics lines" test "$(wc -l < "$work/ref/metrics.jsonl")" -eq 3

# Two shells by hand.
p=$(port)
rank 0 "$p" "$work/hand" > "$work/h0.log" 2>&1 & p0=$!
rank 1 "$p" "$work/hand" > "$work/h1.log" 2>&1; rc1=$?
wait $p0; rc0=$?
check "by hand: both ranks exit 0" test "$rc0$rc1" = "00"
check "by hand: the same model as --nproc 2" cmp -s "$work/ref/model.pt" "$work/hand/model.pt"

# A rank started with another config: both refuse, nothing is written.
p=$(port)
rank 0 "$p" "$work/mismatch" > "$work/m0.log" 2>&1 & p0=$!
rank 1 "$p" "$work/mismatch" --lr 0.1 > "$work/m1.log" 2>&1; rc1=$?
wait $p0; rc0=$?
check "mismatch: both ranks exit 1" test "$rc0$rc1" = "11"
check "mismatch: one line naming rank 1" grep -q '^invp: error: rank 1 was started with a different training config' "$work/m0.log"
check "mismatch: no run directory" test ! -e "$work/mismatch"

# A hung rank (SIGSTOP): the other stops within --dist-timeout with one error line.
p=$(port)
rank 0 "$p" "$work/hung" --dist-timeout 3 > "$work/g0.log" 2>&1 & p0=$!
rank 1 "$p" "$work/hung" --dist-timeout 3 > "$work/g1.log" 2>&1 & p1=$!
for _ in $(seq 100); do [ -s "$work/hung/config.json" ] && break; sleep 0.1; done
sleep 0.5
hung=$(rank_pids "$work/hung" 1)
check "found rank 1's processes" test -n "$hung"
kill -STOP $hung; t0=$SECONDS
wait $p0; rc0=$?; waited=$((SECONDS - t0))
kill -9 $hung 2>/dev/null; wait $p1 2>/dev/null
check "hung peer: rank 0 exits 1" test $rc0 -eq 1
check "hung peer: stopped within the timeout and a margin ($waited s)" test $waited -le 15
check "hung peer: the error names the rank and the wait" grep -q '^invp: error: rank 0 of 2: .*Timed out' "$work/g0.log"

# SIGKILL of rank 1 under --nproc after the first epoch, then the same command again.
timeout 180 "$INVP" --threads 2 "${args[@]}" --nproc 2 --out "$work/kill" > "$work/k.log" 2>&1 & launcher=$!
for _ in $(seq 600); do [ -s "$work/kill/metrics.jsonl" ] && break; sleep 0.1; done
victim=$(rank_pids "$work/kill" 1)
check "found rank 1's process" test -n "$victim"
[ -n "$victim" ] && kill -9 $victim
wait $launcher; rc=$?
check "killed rank: the launcher exits non-zero" test $rc -ne 0
check "killed rank: the launcher names it" grep -q 'invp: rank 1 failed (signal 9)' "$work/k.log"
check "killed rank: no rank left running" test -z "$(pgrep -f -- "--out $work/kill")"
timeout 180 "$INVP" --threads 2 "${args[@]}" --nproc 2 --out "$work/kill" > "$work/k2.log" 2>&1; rc=$?
check "rerun resumes and finishes" test $rc -eq 0
check "rerun says it resumed" grep -q 'resuming' "$work/k2.log"
check "resumed model equals the uninterrupted one bitwise" cmp -s "$work/ref/model.pt" "$work/kill/model.pt"

# Sharded embedding: --nproc 2 writes two parts whose index answers as the whole file's does.
M="$work/ref/model.pt"
timeout 120 "$INVP" -q embed -m "$M" -d "$FM:test" --out "$work/whole.h5" > /dev/null; rc=$?
check "embed the whole test split" test $rc -eq 0
timeout 120 "$INVP" --threads 2 embed -m "$M" -d "$FM:test" --out "$work/emb.h5" --nproc 2 > "$work/e.log" 2>&1; rc=$?
check "embed --nproc 2 exits 0" test $rc -eq 0
check "embed --nproc 2 wrote both parts" test -s "$work/emb.part-0-of-2.h5" -a -s "$work/emb.part-1-of-2.h5"
"$INVP" -q index build -e "$work/whole.h5" -o "$work/iw" -r flat > /dev/null
"$INVP" -q index build -e "$work/emb.part-1-of-2.h5" "$work/emb.part-0-of-2.h5" -o "$work/ip" -r flat > /dev/null; rc=$?
check "index build takes the parts" test $rc -eq 0
for id in 0 4999 5000 9999; do
  a=$("$INVP" --json query --index "$work/iw" --id $id -k 10 | grep -o '"id":[0-9]*' | tr '\n' ' ')
  b=$("$INVP" --json query --index "$work/ip" --id $id -k 10 | grep -o '"id":[0-9]*' | tr '\n' ' ')
  check "parts answer id $id as the whole file does" test -n "$a" -a "$a" = "$b"
done
# One index per part, searched as one collection: the answers of the index over the whole.
"$INVP" -q index build -e "$work/emb.part-0-of-2.h5" -o "$work/i0" -r flat > /dev/null
"$INVP" -q index build -e "$work/emb.part-1-of-2.h5" -o "$work/i1" -r flat > /dev/null
# Scores compared within 1e-5 (the small model has exact ties, whose order differs between
# lists, and the two searches round differently in the last bits).
scores() { grep -o '"score":[-0-9.e]*' | cut -d: -f2; }
close() { [ "$(wc -l < "$1")" -eq 10 ] && [ "$(wc -l < "$2")" -eq 10 ] &&
          paste "$1" "$2" | awk '{ d = $1 - $2; if (d > 1e-5 || d < -1e-5) bad = 1 } END { exit bad }'; }
for id in 3 7777; do
  "$INVP" --json query --index "$work/iw" --id $id -k 10 --filter 'id!=100..200' | scores > "$work/sa.txt"
  "$INVP" --json query --index "$work/i1" --index "$work/i0" --id $id -k 10 --filter 'id!=100..200' | scores > "$work/sb.txt"
  check "two directories answer id $id as the whole index does" close "$work/sa.txt" "$work/sb.txt"
done
"$INVP" -q query --index "$work/i0" --index "$work/iw" --id 3 > /dev/null 2> "$work/ov2.err"; rc=$?
check "directories with overlapping ids are refused in one line" sh -c "test $rc -eq 1 && test \$(wc -l < '$work/ov2.err') -eq 1 && grep -q overlap '$work/ov2.err'"
"$INVP" index build -e "$work/emb.part-0-of-2.h5" "$work/whole.h5" -o "$work/bad" > /dev/null 2> "$work/ov.err"; rc=$?
check "overlapping parts refused in one line" sh -c "test $rc -eq 1 && grep -q '^invp: error: .*overlap' '$work/ov.err'"
"$INVP" embed -m "$M" -d "$FM:test" --out "$work/x.h5" --shard 2/2 > /dev/null 2>&1; rc=$?
check "--shard 2/2 is a usage error" test $rc -eq 2

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
