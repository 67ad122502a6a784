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

# ---- train -> embed -> index -> query / inspect / eval on a tiny labelled folder --------
# 4 classes x 12 grey 8x8 PGM images: class c has a bright quadrant c over a dim background.
pgm() {  # pgm FILE QUADRANT SHADE
  local f=$1 q=$2 shade=$3 body="" y x v
  for y in 0 1 2 3 4 5 6 7; do for x in 0 1 2 3 4 5 6 7; do
    if [ $(( (y / 4) * 2 + x / 4 )) -eq "$q" ]; then v=$((200 + shade)); else v=$((30 + (x * y + shade) % 20)); fi
    body+=$(printf '\\%03o' "$v")
  done; done
  printf 'P5\n8 8\n255\n'"$body" > "$f"
}
for c in 0 1 2 3; do
  mkdir -p "$work/shapes/class$c" "$work/more"
  for i in $(seq 1 12); do pgm "$work/shapes/class$c/img $i.pgm" $c $i; done
  pgm "$work/more/new$c.pgm" $c 40
done
T="--data $work/shapes --out $work/run --epochs 2 --width 4 --dim 16 --batch-size 8 --background 16 --input-size 8 --warmup 1 --hard-positives 4 --knn-every 0"
"$INVP" -q --threads 1 train $T > /dev/null 2> "$work/train.err"; rc=$?
check "tiny train exits 0" test $rc -eq 0
check "model.pt written" test -s "$work/run/model.pt"
check "metrics has 2 epochs" test "$(wc -l < "$work/run/metrics.jsonl")" -eq 2
"$INVP" -q --threads 1 train $T --lr 0.5 > /dev/null 2> "$work/train2.err"; rc=$?
check "changed config refused without --force" test $rc -eq 1
check "refusal names the checkpoint" grep -q "checkpoint.pt" "$work/train2.err"
"$INVP" -q --threads 1 train --data "$work/more" --out "$work/oracle" --positives oracle --epochs 1 > /dev/null 2> "$work/oracle.err"; rc=$?
check "oracle positives on unlabelled images refused" test $rc -eq 1
check "oracle refusal names the source" grep -q "invp: error: .*more.*labelled" "$work/oracle.err"
check "oracle refusal leaves no run directory" test ! -e "$work/oracle"
"$INVP" -q --threads 1 train --data "$work/no-such-dir" --out "$work/nodata" --epochs 1 > /dev/null 2> "$work/nodata.err"; rc=$?
check "missing training data refused" test $rc -eq 1
check "missing data refusal leaves no run directory" test ! -e "$work/nodata"

"$INVP" -q --json embed --model "$work/run/model.pt" --data "$work/shapes" --out "$work/e.h5" > "$work/embed.json"; rc=$?
check "embed exits 0" test $rc -eq 0
check "embed json rows" grep -q '"rows":48' "$work/embed.json"
check "embed json precision (fp32 by default)" grep -q '"precision":"fp32"' "$work/embed.json"
check "embed writes the head by default" grep -q '"features":"head"' "$work/embed.json"
"$INVP" -q --threads 1 train --data "$work/shapes" --out "$work/runbb" --epochs 1 --width 4 --dim 16 --batch-size 8 \
  --background 16 --input-size 8 --warmup 1 --hard-positives 4 --knn-every 0 --embed-features backbone > /dev/null 2>&1
"$INVP" -q --json embed --model "$work/runbb/model.pt" --data "$work/shapes" --out "$work/bb.h5" > "$work/bb.json"; rc=$?
check "train --embed-features backbone: model.json says so, embed follows" \
  sh -c "test $rc -eq 0 && grep -q '\"features\": \"backbone\"' '$work/runbb/model.json' && grep -q '\"features\":\"backbone\"' '$work/bb.json'"
"$INVP" -q embed --model "$work/run/model.pt" --data "$work/shapes" --out "$work/p.h5" --precision fp16 > /dev/null 2>&1; rc=$?
check "embed --precision fp16 is a usage error" test $rc -eq 2
"$INVP" -q --json embed --model "$work/run/model.pt" --data "$work/shapes" --out "$work/p.h5" --precision auto > "$work/auto.json"; rc=$?
check "embed --precision auto exits 0 and says what it used" sh -c "test $rc -eq 0 && grep -Eq '\"precision\":\"(fp32|bf16)\"' '$work/auto.json'"
check "no partial left" test ! -e "$work/e.h5.partial"
cp "$work/e.h5" "$work/e.h5.good"
(ulimit -f 8; trap '' XFSZ; "$INVP" -q embed --model "$work/run/model.pt" --data "$work/shapes" --out "$work/e.h5" 2> "$work/full.err"); rc=$?
check "full disk: embed exits 1 (no crash)" test $rc -eq 1
check "full disk: one error line naming the output" grep -q '^invp: error: .*e\.h5' "$work/full.err"
check "full disk: nothing else on stderr (no HDF5 close noise)" test "$(wc -l < "$work/full.err")" -eq 1
check "full disk: the old file is intact" cmp -s "$work/e.h5" "$work/e.h5.good"
rm -rf "$work/e.h5.good" "$work/e.h5.partial"
"$INVP" -q --json index build --embeddings "$work/e.h5" --out "$work/idx" > "$work/build.json"; rc=$?
check "index build exits 0" test $rc -eq 0
check "auto picks flat for 48 items" grep -q '"recipe":"flat"' "$work/build.json"
check "index.json written" test -s "$work/idx/index.json"
check "model copied into index" test -s "$work/idx/model.pt" -a -s "$work/idx/model.json"
"$INVP" -q index build --embeddings "$work/e.h5" --out "$work/idx-hnsw" --recipe hnsw > "$work/hnsw.txt"; rc=$?
check "hnsw recipe builds" sh -c "test $rc -eq 0 && grep -q HNSW '$work/hnsw.txt'"
check "index build says the embeddings' precision" grep -q "embedded in fp32" "$work/hnsw.txt"
check "index json carries the precision" grep -q '"precision":"fp32"' "$work/build.json"

q="$work/shapes/class2/img 3.pgm"
"$INVP" -q query --index "$work/idx" "$q" -k 5 > "$work/q.txt"; rc=$?
check "query exits 0" test $rc -eq 0
check "query table header" grep -q "rank  *score  *label  *path" "$work/q.txt"
check "query finds itself first" sh -c "sed -n 3p '$work/q.txt' | grep -q 'img 3.pgm'"
check "query self score 1" sh -c "sed -n 3p '$work/q.txt' | grep -q ' 1.000 '"
check "query prints k rows" test "$(grep -cE '^ +[0-9]+  ' "$work/q.txt")" -eq 5
"$INVP" -q --json query --index "$work/idx" "$q" -k 3 --montage "$work/m.png" > "$work/q.json"; rc=$?
check "query json exits 0" test $rc -eq 0
check "query json has 3 hits" test "$(grep -o '"rank"' "$work/q.json" | wc -l)" -eq 3
check "query json category" grep -q '"category":"class2"' "$work/q.json"
check "montage is a PNG" sh -c "head -c 8 '$work/m.png' | grep -q PNG"
# 1 row of k+1 = 4 tiles of 96 px: width 4*(96+4)+4 = 404, height 96+26+4+4 = 130 (IHDR bytes 16..23).
dims=$(od -An -tu1 -j16 -N8 "$work/m.png" | tr -s ' ')
check "montage size 404x130" test "$dims" = " 0 0 1 148 0 0 0 130"
printf '%s\n' "$q" "$work/shapes/class0/img 1.pgm" | "$INVP" -q --json query --index "$work/idx" - -k 2 > "$work/stdin.json"; rc=$?
check "query from stdin list" sh -c "test $rc -eq 0 && test \$(grep -o '\"query\"' '$work/stdin.json' | wc -l) -eq 2"
"$INVP" -q --json query --index "$work/idx" --id 5 -k 3 > "$work/id.json"; rc=$?
check "query by id" sh -c "test $rc -eq 0 && test \$(grep -o '\"rank\"' '$work/id.json' | wc -l) -eq 3"
check "query by id leaves itself out" sh -c "! grep -q '\"id\":5,' '$work/id.json'"
# --serve: resident; each line is answered before the input ends, bad lines in-band.
coproc SERVE { "$INVP" -q query --index "$work/idx" --serve -k 3 2> "$work/serve.err"; }
serve_pid=$SERVE_PID
printf '%s\n' "$q" >&"${SERVE[1]}"
read -r -t 120 line1 <&"${SERVE[0]}"; printf '%s\n' "$line1" > "$work/serve1.json"
check "serve answers a line before the input ends" grep -q '"hits"' "$work/serve1.json"
check "serve answers as the one-shot query does" test "$(grep -o '"id":[0-9]*' "$work/serve1.json")" = "$(grep -o '"id":[0-9]*' "$work/q.json")"
printf '%s\n' "$work/nope.png" "id:5" "id:99999" >&"${SERVE[1]}"
exec {SERVE[1]}>&-
cat <&"${SERVE[0]}" > "$work/serve2.json"
wait "$serve_pid"; rc=$?
check "serve exits 0 at the end of input" test $rc -eq 0
check "serve answers every line" test "$(wc -l < "$work/serve2.json")" -eq 3
check "serve: a bad image is an in-band error naming it" sh -c "sed -n 1p '$work/serve2.json' | grep -q '\"error\":.*nope.png'"
check "serve: id:N queries leave the item out" sh -c "sed -n 2p '$work/serve2.json' | grep -q '\"hits\"' && ! sed -n 2p '$work/serve2.json' | grep -q '\"id\":5,'"
check "serve: an unknown id is an in-band error" sh -c "sed -n 3p '$work/serve2.json' | grep -q 'no item with id 99999'"
"$INVP" -q query --index "$work/idx" --serve "$q" < /dev/null > /dev/null 2>&1; rc=$?
check "serve with an image argument is a usage error" test $rc -eq 2
cp -r "$work/run" "$work/run-gone"  # an index whose model is gone answers id lines only
"$INVP" -q embed --model "$work/run-gone/model.pt" --data "$work/shapes" --out "$work/gone.h5" > /dev/null 2>&1
rm -rf "$work/run-gone"
"$INVP" -q index build --embeddings "$work/gone.h5" --out "$work/idx-nomodel" > /dev/null 2>&1
printf '%s\n' "$q" id:5 | "$INVP" -q query --index "$work/idx-nomodel" --serve -k 2 > "$work/serve3.json" 2>/dev/null; rc=$?
check "serve without a model: image lines fail in-band, id lines answer" sh -c "test $rc -eq 0 && sed -n 1p '$work/serve3.json' | grep -q 'has no model' && sed -n 2p '$work/serve3.json' | grep -q '\"hits\"'"

"$INVP" -q inspect --index "$work/idx" "$q" > "$work/near.txt"; rc=$?
check "inspect image" sh -c "test $rc -eq 0 && sed -n 3p '$work/near.txt' | grep -q class2"
"$INVP" -q --json inspect --index "$work/idx" --categories --out "$work/insp" > "$work/cat.json"; rc=$?
check "inspect categories" sh -c "test $rc -eq 0 && grep -q '\"purity\"' '$work/cat.json'"
check "purity chart PNG" sh -c "head -c 8 '$work/insp/category-purity.png' | grep -q PNG"
"$INVP" -q inspect --index "$work/idx" --propagation "$q" --out "$work/insp" > "$work/prop.txt"; rc=$?
check "inspect propagation" sh -c "test $rc -eq 0 && grep -q 'hop 1: 4 items' '$work/prop.txt'"
check "propagation montage" test -s "$work/insp/propagation.png"
"$INVP" -q inspect --index "$work/idx" --clusters 4 --out "$work/insp" > /dev/null; rc=$?
check "inspect clusters" sh -c "test $rc -eq 0 && test -s '$work/insp/clusters.png'"
"$INVP" -q --json eval retrieval --index "$work/idx" -k 5 > "$work/ret.json"; rc=$?
check "eval retrieval" sh -c "test $rc -eq 0 && grep -q '\"queries\":48' '$work/ret.json'"
"$INVP" -q --json eval retrieval --index "$work/idx" -k 5 --baseline raw-pixels > "$work/retb.json"; rc=$?
check "eval retrieval --baseline raw-pixels" sh -c "test $rc -eq 0 && grep -q '\"baseline\":{.*\"features\":\"raw pixels\".*\"queries\":48' '$work/retb.json'"
"$INVP" -q --json eval knn --raw-pixels --train "$work/shapes" --test "$work/shapes" -k 5 > "$work/knn.json"; rc=$?
check "eval knn raw pixels" sh -c "test $rc -eq 0 && grep -q '\"nn1_cosine\":1' '$work/knn.json'"
"$INVP" -q --json eval knn --model "$work/run/model.pt" --train "$work/shapes" --test "$work/more" -k 5 > /dev/null 2>&1; rc=$?
check "eval knn needs labelled test" test $rc -eq 1
"$INVP" -q --json eval knn --model "$work/run/model.pt" --train "$work/shapes" --test "$work/shapes" -k 5 \
  --baseline raw-pixels > "$work/knnb.json"; rc=$?
check "eval knn --baseline gives both" sh -c "test $rc -eq 0 && grep -q '\"baseline\":{.*\"features\":\"raw pixels\"' '$work/knnb.json'"
"$INVP" -q --json eval copies -m "$work/run/model.pt" -d "$work/shapes" --queries 10 --distortions crop,flip \
  > "$work/copies.json"; rc=$?
check "eval copies, two distortions" sh -c "test $rc -eq 0 && grep -q '\"distortion\":\"crop\".*\"distortion\":\"flip\"' '$work/copies.json'"
"$INVP" -q eval copies -m "$work/run/model.pt" -d "$work/shapes" --distortions crop,rotate > /dev/null 2> "$work/copies.err"; rc=$?
check "eval copies: a bad distortion is a usage error naming it" sh -c "test $rc -eq 2 && head -1 '$work/copies.err' | grep -q rotate"

"$INVP" -q --json index add --index "$work/idx" "$work/more" > "$work/add.json"; rc=$?
check "index add exits 0" test $rc -eq 0
check "index add continues ids" grep -q '"first_id":48' "$work/add.json"
"$INVP" -q --json query --index "$work/idx" "$work/more/new1.pgm" -k 1 > "$work/new.json"
check "added item found first" grep -q '"id":49' "$work/new.json"
check "old generation removed" test ! -e "$work/idx/index-1.faiss"

# Filtered search, removal (in place and by tombstones), labels for added items from a CSV.
"$INVP" -q --json query --index "$work/idx" "$q" -k 5 --filter 'category=class0|class1' > "$work/f.json"; rc=$?
check "filtered query exits 0" test $rc -eq 0
check "filtered query returns only admitted categories" sh -c "! grep -qE '\"category\":\"class(2|3)\"' '$work/f.json' && grep -q '\"rank\":5' '$work/f.json'"
"$INVP" -q --json query --index "$work/idx" "$q" -k 5 --filter 'id=3' > "$work/f1.json"; rc=$?
check "a filter with fewer matches than k says so" sh -c "test $rc -eq 0 && grep -q '\"note\":\"only 1 items match' '$work/f1.json' && test \$(grep -o '\"rank\"' '$work/f1.json' | wc -l) -eq 1"
"$INVP" -q query --index "$work/idx" "$q" --filter 'colour=red' > /dev/null 2> "$work/ferr.txt"; rc=$?
check "a malformed filter is a usage error naming the term" sh -c "test $rc -eq 2 && grep -q 'colour' '$work/ferr.txt'"
"$INVP" -q query --index "$work/idx" "$q" --filter 'category=Hat' > /dev/null 2> "$work/ferr.txt"; rc=$?
check "an unknown category exits 1 listing the known ones" sh -c "test $rc -eq 1 && grep -q 'class0' '$work/ferr.txt'"
"$INVP" -q --json index remove --index "$work/idx" --filter 'category=class1' > "$work/rm.json"; rc=$?
check "index remove by filter exits 0, in place" sh -c "test $rc -eq 0 && grep -q '\"in_place\":true' '$work/rm.json' && grep -q '\"removed\":[1-9]' '$work/rm.json'"
"$INVP" -q --json query --index "$work/idx" "$q" -k 60 > "$work/rmq.json"
check "removed items never come back" sh -c "! grep -q '\"category\":\"class1\"' '$work/rmq.json' && grep -q '\"category\":\"class0\"' '$work/rmq.json'"
printf '# three ids\n1, 2\n3\n' > "$work/ids.txt"
"$INVP" -q --json index remove --index "$work/idx-hnsw" --ids "$work/ids.txt" > "$work/rmh.json"; rc=$?
check "hnsw remove keeps tombstones" sh -c "test $rc -eq 0 && grep -q '\"tombstones\":3' '$work/rmh.json'"
"$INVP" -q --json query --index "$work/idx-hnsw" "$q" -k 45 > "$work/rmhq.json"
check "tombstoned items are skipped" sh -c "! grep -qE '\"id\":(1|2|3),' '$work/rmhq.json' && grep -q '\"rank\":45' '$work/rmhq.json'"
"$INVP" -q --json index compact --index "$work/idx-hnsw" > "$work/cmp.json"; rc=$?
check "compact drops the tombstones" sh -c "test $rc -eq 0 && grep -q '\"dropped\":3' '$work/cmp.json'"
"$INVP" -q --json query --index "$work/idx-hnsw" "$q" -k 45 > "$work/rmhq2.json"
check "compacted index answers as the tombstoned one" test "$(grep -o '"id":[0-9]*' "$work/rmhq.json")" = "$(grep -o '"id":[0-9]*' "$work/rmhq2.json")"
printf 'path,label\nmore/new1.pgm,Sandal\n' > "$work/labels.csv"
"$INVP" -q --json index add --index "$work/idx-hnsw" "$work/more" --labels "$work/labels.csv" > /dev/null; rc=$?
"$INVP" -q --json query --index "$work/idx-hnsw" "$q" -k 5 --filter 'category=Sandal' > "$work/lab.json"
check "index add --labels names a new category" sh -c "test $rc -eq 0 && grep -q 'new1.pgm' '$work/lab.json' && test \$(grep -o '\"rank\"' '$work/lab.json' | wc -l) -eq 1"
"$INVP" -q index remove --index "$work/idx" > /dev/null 2>&1; rc=$?
check "index remove without ids, filter or report is a usage error" test $rc -eq 2

# Error paths: one line naming the file, exit 1.
one_line_error() {  # one_line_error NAME NEEDLE CMD...
  local name=$1 needle=$2; shift 2
  "$@" > /dev/null 2> "$work/err.txt"; local rc=$?
  check "$name exits 1" test $rc -eq 1
  check "$name one line naming $needle" sh -c "test \$(wc -l < '$work/err.txt') -eq 1 && grep -q '^invp: error: .*$needle' '$work/err.txt'"
}
one_line_error "missing index" "nowhere" "$INVP" -q query --index "$work/nowhere" "$q"
one_line_error "missing query image" "nope.png" "$INVP" -q query --index "$work/idx" "$work/nope.png"
one_line_error "missing embeddings" "none.h5" "$INVP" -q index build --embeddings "$work/none.h5" --out "$work/i2"
"$INVP" -q --threads 1 train --data "$work/shapes" --out "$work/run32" --epochs 1 --width 4 --dim 32 --batch-size 8 --background 16 --input-size 8 --knn-every 0 > /dev/null 2>&1
"$INVP" -q embed --model "$work/run32/model.pt" --data "$work/more" --out "$work/e32.h5" > /dev/null 2>&1
one_line_error "wrong dim add" "dimension" "$INVP" -q index add --index "$work/idx" --embeddings "$work/e32.h5"
one_line_error "model mismatch" "run32/model.pt" "$INVP" -q query --index "$work/idx" --model "$work/run32/model.pt" "$q"
echo "garbage" > "$work/idx-hnsw/index.json"
one_line_error "corrupt index.json" "index.json" "$INVP" -q query --index "$work/idx-hnsw" "$q"

echo "cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
