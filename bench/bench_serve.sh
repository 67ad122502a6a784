#!/usr/bin/env bash
# invp query --serve against one invp process per query, on an index directory:
#  1. one process per query (what a script pays calling `invp query` in a loop);
#  2. a resident server, one line at a time: write a path, wait for its JSON line (the first
#     round trip, which also waits for the index and model to load, is reported apart);
#  3. a resident server fed N lines at once (bulk: answered in batches of up to 64).
# Usage: bench/bench_serve.sh INVP INDEX_DIR N IMAGE [IMAGE...]   (images are cycled)
# e.g.   bench/bench_serve.sh build/invp invp-demo/index 200 invp-demo/queries/*.png
set -euo pipefail
invp=$1 idx=$2 n=$3
shift 3
imgs=("$@")
[ ${#imgs[@]} -gt 0 ] || { echo "usage: $0 INVP INDEX_DIR N IMAGE [IMAGE...]" >&2; exit 2; }
us() { echo $(($(date +%s%N) / 1000)); }
img() { echo "${imgs[$1 % ${#imgs[@]}]}"; }
stats() {  # median and 90th percentile of the µs values on stdin, in ms
  sort -n | awk '{v[NR] = $1} END {printf "median %.1f ms, p90 %.1f ms", v[int((NR + 1) / 2)] / 1000, v[int(NR * 0.9 + 0.5)] / 1000}'
}

printf 'bench_serve: %s, %d queries, threads %s, %s\n' "$idx" "$n" "${INVP_THREADS:-default}" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"

: > /tmp/bench_serve.$$.proc
for ((i = 0; i < n; i++)); do
  t=$(us)
  "$invp" -q --json query --index "$idx" "$(img $i)" -k 10 > /dev/null
  echo $(($(us) - t)) >> /tmp/bench_serve.$$.proc
done
echo "one process per query:  $(stats < /tmp/bench_serve.$$.proc)"

coproc SERVE { "$invp" -q query --index "$idx" --serve -k 10; }
t=$(us)
img 0 >&"${SERVE[1]}"
read -r _ <&"${SERVE[0]}"
first=$(($(us) - t))
: > /tmp/bench_serve.$$.rt
for ((i = 0; i < n; i++)); do
  t=$(us)
  img $i >&"${SERVE[1]}"
  read -r _ <&"${SERVE[0]}"
  echo $(($(us) - t)) >> /tmp/bench_serve.$$.rt
done
exec {SERVE[1]}>&-
wait "$SERVE_PID" || true
printf 'serve, line by line:    %s (first, with start-up: %.0f ms)\n' \
  "$(stats < /tmp/bench_serve.$$.rt)" "$(echo "$first" | awk '{print $1 / 1000}')"

for ((i = 0; i < n; i++)); do img $i; done > /tmp/bench_serve.$$.list
t=$(us)
"$invp" -q query --index "$idx" --serve -k 10 < /tmp/bench_serve.$$.list > /dev/null
total=$(($(us) - t))
echo "serve, $n lines at once: $(awk -v t="$total" -v n="$n" 'BEGIN {printf "%.2f s in all, %.1f ms a query", t / 1e6, t / n / 1000}')"
rm -f /tmp/bench_serve.$$.*
