#!/usr/bin/env bash
# End-to-end tests of the `invp` binary: reads its output and exit codes.
# Usage: run.sh PATH_TO_INVP
set -u
INVP=${1:?usage: run.sh PATH_TO_INVP}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
pass=0; fail=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $name"; fi
}
# A labelled folder of tiny PGM images (2 classes x 3), plus one bad file.
for c in cat dog; do
  mkdir -p "$work/folder/$c"
  for i in 1 2 3; do printf 'P5\n4 4\n255\n%s' "$(head -c 16 /dev/zero | tr '\0' "\\$((100+i))")" > "$work/folder/$c/$i.pgm"; done
done
echo "not an image" > "$work/folder/dog/broken.png"

out=$("$INVP" --version); rc=$?
check "version exits 0" test $rc -eq 0
for lib in LibTorch FAISS OpenCV HDF5 BLAS threads; do
  check "version names $lib" grep -q "$lib" <<<"$out"
done
check "help lists data" sh -c "'$INVP' --help | grep -q data"
check "data help teaches" sh -c "'$INVP' data info --help | grep -q SOURCE"

"$INVP" --json data info "$work/folder" > "$work/info.json" 2> "$work/info.err"; rc=$?
check "data info exits 0 despite one bad file" test $rc -eq 0
check "json count" grep -q '"count": 7' "$work/info.json"
check "json bad_files" grep -q '"bad_files": 1' "$work/info.json"
check "json classes named" grep -q '"name": "dog"' "$work/info.json"
check "bad file warned with its name" grep -q 'broken.png' "$work/info.err"

"$INVP" data info --strict "$work/folder" > /dev/null 2> "$work/strict.err"; rc=$?
check "strict fails with exit 1" test $rc -eq 1
check "strict names the file in one line" sh -c "grep -q '^invp: error: .*broken.png' '$work/strict.err' && test \$(wc -l < '$work/strict.err') -eq 1"

"$INVP" data info "$work/missing" > /dev/null 2> "$work/missing.err"; rc=$?
check "missing source exits 1" test $rc -eq 1
check "missing source names path" grep -q "invp: error: .*missing" "$work/missing.err"
mkdir -p "$work/empty"
"$INVP" data info "$work/empty" > /dev/null 2>&1; rc=$?
check "empty dataset is an error" test $rc -eq 1
"$INVP" data info --no-such-flag x > /dev/null 2>&1; rc=$?
check "usage error exits 2" test $rc -eq 2
printf '[data]\nbogus_key = 3\n' > "$work/bad.toml"
"$INVP" --config "$work/bad.toml" data info "$work/folder" > /dev/null 2>&1; rc=$?
check "misspelt config key is a usage error" test $rc -eq 2

"$INVP" -q data preview "$work/folder" --out "$work/p.png" --samples 2 --views 3; rc=$?
check "preview exits 0" test $rc -eq 0
check "preview PNG written" sh -c "head -c 8 '$work/p.png' | grep -q PNG"

if [ -d /usr/share/datasets/fashion-mnist ]; then
  "$INVP" --json data info /usr/share/datasets/fashion-mnist:test > "$work/fm.json"; rc=$?
  check "fashion-mnist test info" test $rc -eq 0
  check "fashion-mnist 10000 images" grep -q '"count": 10000' "$work/fm.json"
  check "fashion-mnist named classes" grep -q '"Ankle boot"' "$work/fm.json"
fi
echo "cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
