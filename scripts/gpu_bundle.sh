#!/usr/bin/env bash
# Packs what a CUDA build of invp needs from Debian for a GPU machine that has CUDA, CMake,
# ninja and a CUDA LibTorch (PyTorch's) but no Debian packages and no network: FAISS,
# OpenCV core/imgproc/imgcodecs, HDF5 C/C++, CLI11, nlohmann-json, xxHash, zlib, OpenBLAS
# (OpenMP) and GoogleTest, with their whole runtime closure. Run it here (it needs Debian's
# package registry); then carry .gpu-deps/ to the GPU machine and run scripts/gpu_build.sh
# there.
#   .gpu-deps/root/         the packages unpacked with dpkg -x (docs, man pages and static
#                           libraries removed)
#   .gpu-deps/part-NN       that tree as one zstd tarball split into pieces of at most 60 MB,
#                           so each fits one device call's 64 MiB carry (reassemble with cat)
# Usage: bash scripts/gpu_bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu-deps
grep -qx '/.gpu-deps/' .git/info/exclude 2>/dev/null || echo '/.gpu-deps/' >> .git/info/exclude
rm -rf "$out" && mkdir -p "$out/debs" "$out/root"
top=(libfaiss-dev libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libhdf5-dev
     libcli11-dev nlohmann-json3-dev libxxhash-dev zlib1g-dev libopenblas0-openmp libgtest-dev)
# The closure by Depends/PreDepends, without what every glibc-based system has and without
# the toolchain (the GPU machine brings its own compiler, CUDA and LibTorch).
skip='^(libc6|libc6-dev|libc-dev-bin|libgcc-s1|libstdc\+\+6|libstdc\+\+-.*-dev|gcc-.*|g\+\+-.*|cpp-.*|binutils.*|linux-libc-dev|libcrypt1|libcrypt-dev|libnsl.*|libtirpc.*|debconf.*|dpkg|perl.*|libperl.*|python3.*|libpython3.*|tzdata|sensible-utils|ucf|init-system-helpers|lsb-base|sysvinit-utils|coreutils|bash|base-files|mime-support|media-types|adduser|passwd|libpam.*|libaudit.*|libselinux1|libsemanage.*|libsepol.*)$'
mapfile -t pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances "${top[@]}" | grep -E '^[a-z0-9]' | sort -u | grep -vE "$skip")
echo "gpu_bundle: ${#pkgs[@]} packages"
(cd "$out/debs" && apt-get download "${pkgs[@]}" > /dev/null)
for d in "$out"/debs/*.deb; do dpkg -x "$d" "$out/root"; done
rm -rf "$out"/root/usr/share/{doc,man,info,lintian,locale,bug,bash-completion}
find "$out/root" -name '*.a' ! -name 'libgtest*.a' ! -name 'libgmock*.a' -delete
echo "gpu_bundle: unpacked $(du -sh "$out/root" | cut -f1), $(find "$out/root" -name '*.so*' -type f | wc -l) shared libraries"
tar -C "$out" -cf - root | zstd -q -19 -T0 | split -b 60M -d - "$out/part-"
rm -rf "$out/debs"
ls -l "$out"/part-*
