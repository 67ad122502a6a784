#!/usr/bin/env bash
# Train once → fill slices → merge (in memory and on disk) → query --serve, on synthetic
# clustered 128-d vectors; per stage: wall seconds, peak RssAnon and peak total RSS (polled
# from /proc every 50 ms), size on disk; recall@10 and queries/s from index.json (tuned at
# merge); cold (pages evicted with posix_fadvise DONTNEED) and warm `query --serve` runs of
# 1,000 id: queries on the memory-mapped index.
#   bench/bigindex.sh N SLICE_ROWS [RECIPE] [WORK_DIR]     e.g. bench/bigindex.sh 1000000 250000
# Prints a markdown table; everything it writes lives under WORK_DIR and is removed at the end
# (KEEP=1 keeps it).
set -euo pipefail
N=${1:?N}; SLICE=${2:?SLICE_ROWS}; RECIPE=${3:-ivf-pq}
WORK=${4:-/tmp/invp-bigindex-$$}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${INVP:-$ROOT/build/invp}; GEN=${GEN:-$ROOT/build/bench_bigindex_gen}
RERANK=${RERANK:-100}
mkdir -p "$WORK"; trap '[[ ${KEEP:-0} == 1 ]] || rm -rf "$WORK"' EXIT
ROWS=()

# measure NAME CMD...: runs CMD, polling its RssAnon / VmRSS peaks.
measure() {
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" < "${STDIN:-/dev/null}" &
  local pid=$! anon=0 rss=0
  while kill -0 $pid 2>/dev/null; do
    if [[ -r /proc/$pid/status ]]; then
      local a r
      a=$(awk '/^RssAnon/{print $2}' /proc/$pid/status 2>/dev/null || echo 0)
      r=$(awk '/^VmHWM/{print $2}' /proc/$pid/status 2>/dev/null || echo 0)
      (( ${a:-0} > anon )) && anon=$a
      (( ${r:-0} > rss )) && rss=$r
    fi
    sleep 0.05
  done
  wait $pid || { echo "$name failed:"; tail -3 "$WORK/$name.err"; exit 1; }
  local secs; secs=$(echo "$(date +%s.%N) - $t0" | bc)
  ROWS+=("| $name | $(printf %.1f "$secs") | $((anon / 1024)) | $((rss / 1024)) |")
  LAST_SECS=$secs
}
evict() { python3 -c '
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$@"; }
mb() { du -sm "$1" | cut -f1; }

# A WORK_DIR holding emb.sample.h5 from an earlier run (KEEP=1) is reused as it is; with
# SERVE_ONLY=1 its merged directories are too, and only the query --serve runs are measured.
[[ -f "$WORK/emb.sample.h5" ]] || measure generate "$GEN" "$N" "$SLICE" 100000 "$WORK/emb"
PARTS=("$WORK"/emb.part-*.h5)
if [[ ${SERVE_ONLY:-0} != 1 ]]; then
measure train "$BIN" index train -e "$WORK/emb.sample.h5" -r "$RECIPE" --size "$N" -o "$WORK/trained"
SLICES=()
for i in "${!PARTS[@]}"; do
  measure "fill slice $i" "$BIN" index build --trained "$WORK/trained" -e "${PARTS[$i]}" -o "$WORK/slice$i"
  SLICES+=("$WORK/slice$i")
done
measure "merge (in memory)" "$BIN" --json index merge "${SLICES[@]}" -o "$WORK/mem" --rerank "$RERANK"
measure "merge --on-disk" "$BIN" --json index merge "${SLICES[@]}" -o "$WORK/disk" --on-disk --rerank "$RERANK"
fi

python3 -c "import random; random.seed(1); print('\n'.join('id:%d' % random.randrange($N) for _ in range(1000)))" > "$WORK/queries.txt"
for d in mem disk; do
  evict "$WORK/$d"/*
  STDIN="$WORK/queries.txt" measure "serve 1000 ($d, cold)" "$BIN" query --serve -i "$WORK/$d" -k 10
  STDIN="$WORK/queries.txt" measure "serve 1000 ($d, warm)" "$BIN" query --serve -i "$WORK/$d" -k 10
done

echo "N=$N slice=$SLICE recipe=$RECIPE rerank=$RERANK cpu=\"$(lscpu | sed -n 's/^Model name: *//p')\" cores=$(nproc)"
echo
echo "| stage | seconds | peak RssAnon MiB | peak RSS MiB |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
for d in mem disk; do
  python3 - "$WORK/$d/index.json" "$(mb "$WORK/$d")" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); m = j["measured"]
print(f"{sys.argv[1].split('/')[-2]}: {j['factory']} size={j['size']} disk={sys.argv[2]} MiB "
      f"params={j['search_params']} recall@{m['k']}={m['recall_at_k']:.3f} "
      f"rerank({j['rerank']})={m.get('rerank_recall_at_k', 0):.3f} qps={m['queries_per_second']:.0f} "
      f"lists={j['ivfdata'] or 'in .faiss'}")
PY
done
[[ ${SERVE_ONLY:-0} == 1 ]] || echo "slices: $(du -smc "$WORK"/slice* | tail -1 | cut -f1) MiB, parts: $(du -smc "$WORK"/emb.part-* | tail -1 | cut -f1) MiB"
