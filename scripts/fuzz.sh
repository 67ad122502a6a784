#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (+ASan/UBSan) and fuzzes each for a
# bounded time, starting from the committed corpus. A crash input lands in
# fuzz/regressions/<target>/, where the normal test suite replays it from then on: fix the
# bug, keep the file. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET (default 75)] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-75}; shift || true
command -v clang++-14 > /dev/null || { echo "fuzz: needs clang-14 and libclang-rt-14-dev (apt)"; exit 1; }
# libgomp, not libomp: LibTorch and FAISS use libgomp and two OpenMP runtimes misbehave.
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DOpenMP_CXX_FLAGS=-fopenmp=libgomp -DOpenMP_C_FLAGS=-fopenmp=libgomp \
  -DOpenMP_CXX_LIB_NAMES=gomp -DOpenMP_C_LIB_NAMES=gomp -DOpenMP_gomp_LIBRARY=/usr/lib/gcc/x86_64-linux-gnu/12/libgomp.so \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
  -DINVP_BUILD_FUZZ=ON -DINVP_BUILD_TESTS=OFF > build-fuzz.log
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(cd fuzz && ls fuzz_*.cpp | sed 's/\.cpp$//'))
cmake --build build-fuzz --target "${targets[@]}" >> build-fuzz.log
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 OMP_NUM_THREADS=1
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/regressions/$t" "build-fuzz/corpus/$t"
  echo "fuzz: $t for ${secs}s"
  if ! ./build-fuzz/$t "build-fuzz/corpus/$t" "fuzz/corpus/$t" -max_total_time="$secs" \
       -rss_limit_mb=4096 -max_len=65536 -artifact_prefix="fuzz/regressions/$t/" -print_final_stats=1 \
       2> "build-fuzz/$t.log"; then
    echo "fuzz: $t FOUND A CRASH: see build-fuzz/$t.log and fuzz/regressions/$t/"; status=1
  fi
  grep -E "stat::number_of_executed_units|cov:" "build-fuzz/$t.log" | tail -2 | sed 's/^/  /'
done
exit $status
