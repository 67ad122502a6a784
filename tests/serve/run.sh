#!/usr/bin/env bash
# End-to-end tests of `invp serve` on 127.0.0.1: builds a tiny index (a 2-epoch model on 48
# grey 8x8 images), then runs api.mjs (the JSON API against `invp --json query`, every bad
# request, index add, SIGTERM) or browser.mjs (the page in headless Chromium).
# Usage: run.sh PATH_TO_INVP api|browser     (exit 77 = skipped: a tool is missing)
set -euo pipefail
INVP=$(realpath "${1:?usage: run.sh PATH_TO_INVP api|browser}")
MODE=${2:?api or browser}
here=$(cd "$(dirname "$0")" && pwd)
command -v node > /dev/null || { echo "skip: node not installed (scripts/setup.sh)"; exit 77; }
if [ "$MODE" = browser ]; then
  [ -x /usr/bin/chromium ] || { echo "skip: chromium not installed (scripts/setup.sh)"; exit 77; }
  [ -d "$here/../../third_party/node/node_modules/puppeteer-core" ] ||
    { echo "skip: puppeteer-core not installed (scripts/setup.sh)"; exit 77; }
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
pgm() {  # pgm FILE QUADRANT SHADE: class QUADRANT has a bright quadrant over a dim background
  local f=$1 q=$2 shade=$3 body="" y x v
  for y in 0 1 2 3 4 5 6 7; do for x in 0 1 2 3 4 5 6 7; do
    if [ $(( (y / 4) * 2 + x / 4 )) -eq "$q" ]; then v=$((200 + shade)); else v=$((30 + (x * y + shade) % 20)); fi
    body+=$(printf '\\%03o' "$v")
  done; done
  printf 'P5\n8 8\n255\n'"$body" > "$f"
}
for c in 0 1 2 3; do
  mkdir -p "$work/shapes/class$c" "$work/more"
  for i in $(seq 1 12); do pgm "$work/shapes/class$c/img$i.pgm" $c $i; done
  pgm "$work/more/new$c.pgm" $c 40
done
T="--data $work/shapes --out $work/run --epochs 2 --width 4 --dim 16 --batch-size 8 --background 16 --input-size 8 --warmup 1 --hard-positives 4 --knn-every 0"
"$INVP" -q --threads 1 train $T > /dev/null
"$INVP" -q embed --model "$work/run/model.pt" --data "$work/shapes" --out "$work/e.h5" > /dev/null
"$INVP" -q index build --embeddings "$work/e.h5" --out "$work/idx" > /dev/null
export INVP_THREADS=1
exec node "$here/$MODE.mjs" "$INVP" "$work/idx" "$work/shapes/class2/img3.pgm" "$work"
