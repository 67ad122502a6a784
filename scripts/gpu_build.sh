#!/usr/bin/env bash
# On the GPU machine (CUDA + PyTorch's CUDA LibTorch, no Debian packages, no network):
# unpacks the Debian files that scripts/gpu_bundle.sh packed here (.gpu-deps/deps.tar.xz),
# builds invp against the CUDA LibTorch (INVP_WITH_CUDA turns on by itself) and runs the
# tests; the CUDA agreement tests (graph and loss, CPU against GPU) run there instead of
# skipping.
# Usage: bash scripts/gpu_build.sh [BUILD_DIR (default build-cuda)] [ctest args...]
#   TORCH_PREFIX=DIR    LibTorch's CMake prefix (default: the one of python3's torch)
#   INVP_GPU_TARGETS=.. build only these targets (default: all)
#   INVP_GPU_NO_TESTS=1 build only
# Afterwards `source /tmp/invp-gpu-deps/env.sh` sets LD_LIBRARY_PATH for running the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cuda}; shift || true
deps=/tmp/invp-gpu-deps
if [ ! -d "$deps/root" ]; then
  mkdir -p "$deps"
  if command -v xz > /dev/null; then
    tar -C "$deps" -xJf .gpu-deps/deps.tar.xz
  else
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' .gpu-deps/deps.tar.xz "$deps"
  fi
fi
root=$deps/root
# FAISS's GPU kNN search is compiled from Debian's FAISS source when it was carried
# (gpu_bundle.sh; INVP_NO_FAISS_GPU=1 leaves it out).
faiss_args=()
if [ -z "${INVP_NO_FAISS_GPU:-}" ] && [ -f .gpu-deps/faiss_1.7.3.orig.tar.gz ]; then
  [ -d "$deps/faiss-1.7.3" ] || tar -C "$deps" -xzf .gpu-deps/faiss_1.7.3.orig.tar.gz
  faiss_args+=(-DINVP_FAISS_GPU_SOURCE="$deps/faiss-1.7.3" -DINVP_CUDA_ARCHITECTURES=90)
fi
L=$root/usr/lib/x86_64-linux-gnu
# Debian's FAISS package names the system BLAS by absolute path; here it lives in the tree.
sed -i "s#/usr/lib/x86_64-linux-gnu/libblas.so#$L/openblas-openmp/libblas.so#g;
        s#/usr/lib/x86_64-linux-gnu/liblapack.so#$L/openblas-openmp/liblapack.so#g" \
    "$L/cmake/faiss/faiss-targets.cmake"
# OpenCV's CMake package lists all of OpenCV's modules and fails on the ones not carried, and
# FindHDF5 looks for Debian's compiler wrappers: small Find modules name what is there instead.
mkdir -p "$deps/cmake"
cat > "$deps/cmake/FindOpenCV.cmake" <<EOF
set(OpenCV_INCLUDE_DIRS $root/usr/include/opencv4)
set(OpenCV_LIBS "")
foreach(m core imgproc imgcodecs)
  if(NOT TARGET opencv_\${m})
    add_library(opencv_\${m} SHARED IMPORTED)
    set_target_properties(opencv_\${m} PROPERTIES IMPORTED_LOCATION $L/libopencv_\${m}.so
                          INTERFACE_INCLUDE_DIRECTORIES $root/usr/include/opencv4)
  endif()
  list(APPEND OpenCV_LIBS opencv_\${m})
endforeach()
set(OpenCV_FOUND TRUE)
EOF
cat > "$deps/cmake/FindHDF5.cmake" <<EOF
set(HDF5_INCLUDE_DIRS $root/usr/include/hdf5/serial)
set(HDF5_C_LIBRARIES $L/hdf5/serial/libhdf5.so)
set(HDF5_CXX_LIBRARIES $L/hdf5/serial/libhdf5_cpp.so)
set(HDF5_FOUND TRUE)
EOF
libpath="$L:$L/openblas-openmp:$L/hdf5/serial:$root/lib/x86_64-linux-gnu:$root/usr/lib"
echo "export LD_LIBRARY_PATH=$libpath:\${LD_LIBRARY_PATH:-}" > "$deps/env.sh"
export LD_LIBRARY_PATH="$libpath:${LD_LIBRARY_PATH:-}"
# PyTorch's wheels export copies of some newer libstdc++ functions (std::filesystem among
# them; remove_all crashed through a null pointer). The system's shared libstdc++, named first
# on the link line (before any object, so before libtorch), is where the linker binds them; a
# plain -lstdc++ there does not help where the compiler links libstdc++ statically.
stdcxx=$(ldconfig -p | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')
torch_prefix=${TORCH_PREFIX:-$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')}
cuda_args=()
if [ -d /usr/local/cuda ]; then
  cuda_args+=(-DCUDAToolkit_ROOT=/usr/local/cuda -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DINVP_BUILD_TESTS=ON -DINVP_BUILD_BENCH=ON \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$root/usr;$L/cmake;$root/usr/share/cmake" \
  -DCMAKE_MODULE_PATH="$deps/cmake" -DTORCH_CUDA_ARCH_LIST=9.0 "${cuda_args[@]}" "${faiss_args[@]}" \
  -DXXHASH_INCLUDE_DIR="$root/usr/include" -DXXHASH_LIBRARY="$L/libxxhash.so" \
  -DZLIB_INCLUDE_DIR="$root/usr/include" \
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,--no-as-needed $stdcxx -Wl,--as-needed -Wl,-rpath-link,$libpath"
# shellcheck disable=SC2086
cmake --build "$build" -j "$(nproc)" ${INVP_GPU_TARGETS:+--target $INVP_GPU_TARGETS} -- -k 0
if [ -x "$build/invp" ]; then "$build/invp" --version; fi
if [ -z "${INVP_GPU_NO_TESTS:-}" ]; then
  ctest --test-dir "$build" --output-on-failure -j 8 "$@"
fi
