#!/usr/bin/env bash
# A colour benchmark from public data: Debian's tuxpaint-stamps-default (about 800 colour
# cut-outs in 16 category folders; `apt install tuxpaint-stamps-default`). For each recipe
# (configs/folder.toml plus the flags on its line below), trains on the whole folder without
# labels and measures, against raw pixels under the same protocol:
#   - distorted-copy retrieval (label-free): `invp eval copies` over every image, 300 copies a
#     distortion, recall@1 for each distortion and their mean, model (head and backbone) and raw
#     pixels (the model's input pooled to at most 32 px, centred, cosine);
#   - category retrieval: precision@1 of the folder's own items (flat index, each leaving
#     itself out), for head and backbone features (the folder preset embeds the backbone's by
#     default), and for raw pixels (`eval retrieval --baseline raw-pixels`).
# Usage: bench/colour_bench.sh [INVP=build/invp] [DATA=/usr/share/tuxpaint/stamps] [WORK=/tmp/invp-colour] [RECIPES...]
# A RECIPE is NAME=FLAGS, e.g. "32px=--input-size 32"; without any, the list below. WORK keeps
# each recipe's run, so a rerun only evaluates.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
INVP=${1:-$ROOT/build/invp}; DATA=${2:-/usr/share/tuxpaint/stamps}; WORK=${3:-/tmp/invp-colour}
shift $(( $# < 3 ? $# : 3 ))
[[ -d $DATA ]] || { echo "colour_bench: $DATA not found (apt install tuxpaint-stamps-default)" >&2; exit 3; }
RECIPES=("$@")
if [[ ${#RECIPES[@]} -eq 0 ]]; then
  RECIPES=("folder.toml="
           "32px=--input-size 32"
           "no-colour-jitter=--hue 0 --grayscale 0"
           "32px-no-colour=--input-size 32 --hue 0 --grayscale 0"
           "instance=--loss instance")
fi
mkdir -p "$WORK"
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $("$INVP" --version | head -1); $DATA"
echo "| recipe | train s | features | crop | scale | jpeg | colour | flip | mixed | mean r@1 | category P@1 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
copies() {  # copies MODEL FEATURES -> "crop … mixed mean" for the model, then for raw pixels
  "$INVP" -q --json eval copies -m "$1" -d "$DATA" --collection 100000 --queries 300 --features "$2" | python3 -c '
import json, sys
j = json.load(sys.stdin)
for who in ("model", "raw_pixels"):
    r = [row[who]["recall_at_1"] for row in j["rows"]]
    print(" | ".join("%.3f" % x for x in r) + " | %.3f" % (sum(r) / len(r)))'
}
for spec in "${RECIPES[@]}"; do
  name=${spec%%=*}; flags=${spec#*=}
  run="$WORK/$name"
  if [[ ! -f $run/model.pt ]]; then
    rm -rf "$run"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$INVP" -q --config "$ROOT/configs/folder.toml" train --data "$DATA" --out "$run" $flags > "$run.log" 2>&1 ||
      { tail -3 "$run.log"; exit 1; }
    python3 -c "print(round($(date +%s.%N) - $start, 1))" > "$run.seconds"
  fi
  secs=$(cat "$run.seconds" 2>/dev/null || echo "?")
  for f in head backbone; do
    [[ -f $run/emb-$f.h5 ]] || "$INVP" -q embed -m "$run/model.pt" -d "$DATA" --features $f --out "$run/emb-$f.h5" > /dev/null
    [[ -f $run/idx-$f/index.json ]] || "$INVP" -q index build -e "$run/emb-$f.h5" -o "$run/idx-$f" --recipe flat > /dev/null
  done
  read -r p1 raw_p1 < <("$INVP" -q --json eval retrieval --index "$run/idx-head" -k 10 --baseline raw-pixels |
    python3 -c 'import json,sys; j = json.load(sys.stdin); print("%.3f %.3f" % (j["precision_at_1"], j["baseline"]["precision_at_1"]))')
  bb_p1=$("$INVP" -q --json eval retrieval --index "$run/idx-backbone" -k 10 |
    python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["precision_at_1"])')
  mapfile -t head < <(copies "$run/model.pt" head)
  mapfile -t back < <(copies "$run/model.pt" backbone)
  echo "| $name | $secs | head | ${head[0]} | $p1 |"
  echo "| $name | | backbone | ${back[0]} | $bb_p1 |"
  echo "| $name | | raw pixels (its input) | ${head[1]} | $raw_p1 |"
done
