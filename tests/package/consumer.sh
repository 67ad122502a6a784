#!/usr/bin/env bash
# The CMake package as an outside project uses it: install the build into a scratch prefix,
# check that only public headers went in, then configure, build and run examples/consumer
# (it embeds one image through the installed library) against that prefix alone.
# Usage: consumer.sh BUILD_DIR SOURCE_DIR
set -u
build=${1:?usage: consumer.sh BUILD_DIR SOURCE_DIR}; src=${2:?}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
pass=0; fail=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $name"; fi
}
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log" 2>&1; rc=$?
check "cmake --install exits 0" test $rc -eq 0
check "config and targets installed" test -f "$work/prefix/lib/cmake/invp/invpConfig.cmake" -a -f "$work/prefix/lib/cmake/invp/invpTargets.cmake"
check "public headers installed" test -f "$work/prefix/include/invp/search/embedder.h"
for h in index/ann_detail.h store/h5_io.h store/row_buffer.h store/vlen_check.h train/trainer_state.h; do
  check "internal header $h not installed" test ! -e "$work/prefix/include/invp/$h"
done
cmake -S "$src/examples/consumer" -B "$work/b" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log" 2>&1; rc=$?
check "the consumer configures against the prefix" test $rc -eq 0
[ $rc -eq 0 ] || tail -20 "$work/configure.log"
cmake --build "$work/b" > "$work/build.log" 2>&1; rc=$?
check "the consumer builds" test $rc -eq 0
[ $rc -eq 0 ] || tail -20 "$work/build.log"
# A model to embed with (a tiny one-epoch run) and a grey 28x28 test image.
"$build/invp" -q --threads 1 train --data /usr/share/datasets/fashion-mnist:train --limit 256 --width 8 \
  --batch-size 64 --background 64 --epochs 1 --knn-every 0 --out "$work/run" > /dev/null 2>&1
check "a model to embed with" test -f "$work/run/model.pt"
{ printf 'P5\n28 28\n255\n'; head -c 784 /dev/urandom; } > "$work/x.pgm"
out=$("$work/b/embed_one" "$work/run/model.pt" "$work/x.pgm"); rc=$?
check "the consumer runs" test $rc -eq 0
read -r dim first norm <<<"$out"
check "a 128-d embedding ($dim)" test "$dim" = 128
check "of unit length ($norm)" test "$norm" = 1.000000
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
