#!/usr/bin/env bash
# Packs what a CUDA build of invp needs from Debian for a GPU machine that has CUDA, CMake,
# ninja and a CUDA LibTorch (PyTorch's) but no Debian packages and no network: FAISS (a
# static library in Debian), OpenCV core/imgproc/imgcodecs, HDF5 C/C++, CLI11, nlohmann-json,
# xxHash, zlib, OpenBLAS (OpenMP) and GoogleTest. Run it here, after scripts/setup.sh (it
# needs Debian's package registry); then carry .gpu-deps/ to the GPU machine and run
# scripts/gpu_build.sh there.
#
# Only what the build reads is kept: the headers and CMake files of the packages above, the
# static FAISS and GoogleTest, and the shared libraries the linked ones load at run time (their
# closure by `ldd`, resolved inside the unpacked tree; glibc and libstdc++ excluded: the GPU
# machine has newer ones). OpenCV's own CMake package lists every OpenCV module and fails on
# the ones not carried, so gpu_build.sh writes small Find modules instead.
#   .gpu-deps/deps.tar.xz   that tree, xz -9e (about 52 MB: one device call carries it; xz
#                           because every image has xz or Python's lzma, not always zstd)
#   .gpu-deps/faiss_1.7.3.orig.tar.gz  Debian's FAISS source (the installed version, 0.8 MB): the
#                           CUDA build compiles FAISS's GPU kNN search from it (cmake/faiss_gpu.cmake)
#   .gpu-deps/fashion-mnist/ the default data set, for timed training runs there (30 MB; carry
#                           it in a second call: both together exceed a call's 64 MiB)
# Usage: bash scripts/gpu_bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu-deps
rm -rf "$out" && mkdir -p "$out/debs" "$out/root"
top=(libfaiss-dev libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libhdf5-dev
     libcli11-dev nlohmann-json3-dev libxxhash-dev zlib1g-dev libopenblas0-openmp libgtest-dev)
# The closure by Depends/PreDepends, without what every glibc-based system has and without
# the toolchain (the GPU machine brings its own compiler, CUDA and LibTorch).
skip='^(libc6|libc6-dev|libc-dev-bin|libgcc-s1|libstdc\+\+6|libstdc\+\+-.*-dev|gcc-.*|g\+\+-.*|cpp-.*|binutils.*|linux-libc-dev|libcrypt1|libcrypt-dev|libnsl.*|debconf.*|dpkg|perl.*|libperl.*|python3.*|libpython3.*|tzdata|sensible-utils|ucf|init-system-helpers|lsb-base|sysvinit-utils|coreutils|bash|base-files|mime-support|media-types|adduser|passwd|libpam.*|libaudit.*|libselinux1|libsemanage.*|libsepol.*)$'
mapfile -t pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances "${top[@]}" | grep -E '^[a-z0-9]' | sort -u | grep -vE "$skip")
echo "gpu_bundle: ${#pkgs[@]} packages"
(cd "$out/debs" && apt-get download "${pkgs[@]}" > /dev/null 2>&1)
for d in "$out"/debs/*.deb; do dpkg -x "$d" "$out/root"; done
rm -rf "$out/debs"

r=$(cd "$out/root" && pwd)
L=$r/usr/lib/x86_64-linux-gnu
# dpkg -x runs no update-alternatives: libblas.so.3 / liblapack.so.3 stay in openblas-openmp/.
# (armadillo, HDF4 and OGDI, which GDAL loads, install to /usr/lib itself.)
export LD_LIBRARY_PATH=$L:$L/openblas-openmp:$L/hdf5/serial:$r/lib/x86_64-linux-gnu:$r/usr/lib
seeds=("$L"/libopencv_{core,imgproc,imgcodecs}.so.4.6.0 "$L"/libhdf5_serial.so.*.*.* \
       "$L"/libhdf5_serial_cpp.so.*.*.* "$L"/libxxhash.so.0.* "$L"/libgomp.so.1.* \
       "$L"/openblas-openmp/libopenblasp-r*.so)
keep=$(mktemp)
for s in "${seeds[@]}"; do
  [ -f "$s" ] || { echo "gpu_bundle: $s: not in the unpacked packages" >&2; exit 1; }
  echo "$s"
  if ldd "$s" | grep -q 'not found'; then echo "gpu_bundle: $s: a dependency is missing" >&2; exit 1; fi
  ldd "$s" | awk '/=>/ {print $3}' | xargs -r readlink -f | grep "^$r/" || true
done | xargs -r readlink -f | sort -u > "$keep"
# Everything loaded must come from the tree, except glibc and the C++ runtime.
outside=$(for s in "${seeds[@]}"; do ldd "$s" | awk '/=>/ {print $3}'; done | sort -u | grep -v "^$r/" |
          grep -vE '/(libc|libm|libdl|librt|libpthread|libresolv|libutil|libanl|libmvec|ld-linux-x86-64|libstdc\+\+|libgcc_s)\.so' || true)
if [ -n "$outside" ]; then echo "gpu_bundle: loaded from outside the packages: $outside" >&2; exit 1; fi
# Every link (SONAME and dev links) that resolves to a kept library stays too.
find "$r" -type l | while read -r l; do
  t=$(readlink -f "$l" || true)
  if [ -n "$t" ] && grep -qxF "$t" "$keep"; then echo "$l"; fi
done >> "$keep"
find "$L" -name 'libfaiss.a' -o -name 'libgtest*.a' -o -name 'libgmock*.a' >> "$keep"
find "$r" \( -path "*/cmake/faiss/*" -o -path "*/cmake/GTest/*" -o -path "*/cmake/CLI11/*" \
             -o -path "*/cmake/nlohmann_json/*" \) >> "$keep"
# Headers: only those of the packages built against.
find "$r/usr/include" \( -path "*/include/opencv4/*" -o -path "*/include/hdf5/*" -o -path "*/include/faiss/*" \
     -o -path "*/include/CLI/*" -o -path "*/include/nlohmann/*" -o -path "*/include/gtest/*" \
     -o -path "*/include/gmock/*" -o -name 'xxh*.h' -o -name 'zlib.h' -o -name 'zconf.h' \) >> "$keep"
find "$L/hdf5/serial" -maxdepth 1 -type l >> "$keep"  # include -> ../../../../include/hdf5/serial, lib -> .
sort -u "$keep" -o "$keep"
find "$r" ! -type d | grep -vxFf "$keep" | xargs -r rm -f
find "$r" -depth -type d -empty -delete
echo "gpu_bundle: kept $(du -sh "$r" | cut -f1), $(find "$r" -name '*.so*' -type f | wc -l) shared libraries"
tar -C "$out" -cf - root | xz -9e -T0 > "$out/deps.tar.xz"
rm -rf "$out/root" "$keep"
mkdir -p "$out/fashion-mnist"
cp /usr/share/datasets/fashion-mnist/*.gz "$out/fashion-mnist/"
# The FAISS source package, through a private deb-src list (the system's lists stay as they are).
src=$(mktemp -d) && chmod 755 "$src"  # apt's _apt user fetches into it
mkdir -p "$src/parts" "$src/lists/partial"
sed -n '/^URIs:/p;/^Signed-By:/p' /etc/apt/sources.list.d/debian.sources | head -n 2 > "$src/head"
{ echo "Types: deb-src"; grep '^URIs:' "$src/head"; echo "Suites: bookworm"; echo "Components: main"
  grep '^Signed-By:' "$src/head"; } > "$src/parts/src.sources"
o=(-o Dir::Etc::SourceParts="$src/parts" -o Dir::Etc::SourceList=/dev/null -o Dir::State::Lists="$src/lists")
apt-get "${o[@]}" update > /dev/null
(cd "$src" && apt-get "${o[@]}" source --download-only faiss > /dev/null 2>&1)
cp "$src"/faiss_1.7.3.orig.tar.gz "$out/"
rm -rf "$src"
ls -l "$out/deps.tar.xz" "$out/faiss_1.7.3.orig.tar.gz" "$out/fashion-mnist"
