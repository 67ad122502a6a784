#!/usr/bin/env bash
# `invp dedup` end to end: the JSON schema, exact copies grouped, the table, montage and
# histogram files, --against, and the exits of bad thresholds (2, usage) and a missing index
# (1, one line naming it).
# Usage: dedup.sh PATH_TO_INVP
set -u
INVP=${1:?usage: dedup.sh PATH_TO_INVP}
work=${WORK:-$(mktemp -d)}; [ -n "${WORK:-}" ] || trap 'rm -rf "$work"' EXIT
pass=0; fail=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $name"; fi
}
jqe() { jq -e "$@" > /dev/null; }
# 4 classes x 6 grey 8x8 PGM images (class c: a bright quadrant c), plus two exact copies.
pgm() {  # pgm FILE QUADRANT SHADE
  local f=$1 q=$2 shade=$3 body="" y x v
  for y in 0 1 2 3 4 5 6 7; do for x in 0 1 2 3 4 5 6 7; do
    if [ $(( (y / 4) * 2 + x / 4 )) -eq "$q" ]; then v=$((200 + shade * 7)); else v=$((30 + (x * y * shade) % 90)); fi
    body+=$(printf '\\%03o' "$v")
  done; done
  printf 'P5\n8 8\n255\n'"$body" > "$f"
}
for c in 0 1 2 3; do
  mkdir -p "$work/shapes/class$c"
  for i in 1 2 3 4 5 6; do pgm "$work/shapes/class$c/img $i.pgm" $c $i; done
done
cp "$work/shapes/class1/img 2.pgm" "$work/shapes/class1/copy of img 2.pgm"
cp "$work/shapes/class3/img 5.pgm" "$work/shapes/class0/moved img 5.pgm"
"$INVP" -q --threads 1 train --data "$work/shapes" --out "$work/run" --epochs 1 --width 4 --dim 16 --batch-size 8 \
  --background 8 --input-size 8 --warmup 1 --hard-positives 4 --knn-every 0 > /dev/null 2>&1 &&
"$INVP" -q embed --model "$work/run/model.pt" --data "$work/shapes" --out "$work/e.h5" > /dev/null &&
"$INVP" -q index build --embeddings "$work/e.h5" --out "$work/idx" > /dev/null; rc=$?
check "tiny index built" test $rc -eq 0

"$INVP" -q --json dedup --index "$work/idx" --threshold 0.9999 > "$work/d.json"; rc=$?
check "dedup --json exits 0" test $rc -eq 0
check "json schema" jqe '(keys == ["groups", "threshold"]) and .threshold == 0.9999 and (.groups | length) >= 2
  and all(.groups[]; keys == ["items", "representative"] and .items[0].id == .representative and (.items | length) >= 2
  and all(.items[]; keys == ["id", "path", "score"] and (.score | type) == "number" and .score <= 1.000001))' "$work/d.json"
check "exact copy grouped with its original" jqe 'any(.groups[]; [.items[].path] | any(endswith("class1/img 2.pgm")) and any(endswith("copy of img 2.pgm")))' "$work/d.json"
check "copy in another folder grouped too" jqe 'any(.groups[]; [.items[].path] | any(endswith("class3/img 5.pgm")) and any(endswith("moved img 5.pgm")))' "$work/d.json"
check "biggest groups first" jqe '[.groups[].items | length] | . == (sort | reverse)' "$work/d.json"

"$INVP" -q dedup --index "$work/idx" --threshold 0.9999 --montage "$work/m" > "$work/d.txt"; rc=$?
check "table exits 0" test $rc -eq 0
check "table names groups" grep -q "^group 1: " "$work/d.txt"
check "table header" grep -q "id  *score  *label  *path" "$work/d.txt"
check "one montage per group" test "$(ls "$work/m"/group-*.png | wc -l)" -eq "$(jq '.groups | length' "$work/d.json")"

"$INVP" -q --json dedup --index "$work/idx" --threshold auto --histogram "$work/h.png" > "$work/a.json"; rc=$?
check "auto exits 0" test $rc -eq 0
check "auto threshold is a similarity" jqe '(.threshold | type) == "number" and .threshold <= 1' "$work/a.json"
check "histogram PNG written" sh -c "head -c 8 '$work/h.png' | grep -q PNG"

"$INVP" -q --json dedup --index "$work/idx" --against "$work/idx" --threshold 0.9999 > "$work/x.json"; rc=$?
check "against exits 0" test $rc -eq 0
check "against: every item exists in its own index" jqe '(.items | length) == 26 and all(.items[]; any(.matches[]; .score >= 0.9999))' "$work/x.json"

for bad in 1.5 x 0 -0.5; do
  "$INVP" dedup --index "$work/idx" --threshold "$bad" > /dev/null 2> "$work/bad.err"; rc=$?
  check "threshold $bad is a usage error (exit 2)" test $rc -eq 2
  check "threshold $bad: the message names the option" grep -q -- "--threshold" "$work/bad.err"
done
"$INVP" dedup --index "$work/no-such-index" > /dev/null 2> "$work/missing.err"; rc=$?
check "missing index exits 1" test $rc -eq 1
check "missing index: one line naming it" sh -c "grep -q '^invp: error: .*no-such-index' '$work/missing.err' && test \$(wc -l < '$work/missing.err') -eq 1"

echo "dedup cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
