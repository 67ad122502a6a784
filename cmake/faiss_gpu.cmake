# FAISS's GPU brute-force kNN (faiss::gpu::bfKnn) for CUDA builds, compiled from a FAISS source
# tree, since Debian's libfaiss-dev has no GPU code: INVP_FAISS_GPU_SOURCE names the tree
# (Debian's `faiss` 1.7.3 source package, the version of the installed headers and library;
# scripts/gpu_bundle.sh fetches it). Only the sources the search needs are built (the distance
# tiles, the block k-selection kernels, the resources object), for INVP_CUDA_ARCHITECTURES
# only; the rest of FAISS comes from Debian's libfaiss. The result: target invp_faiss_gpu.
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(_g ${INVP_FAISS_GPU_SOURCE}/faiss/gpu)
if(NOT EXISTS ${_g}/GpuDistance.cu)
  message(FATAL_ERROR "invp: INVP_FAISS_GPU_SOURCE=${INVP_FAISS_GPU_SOURCE} has no faiss/gpu/GpuDistance.cu")
endif()
file(GLOB _blockselect ${_g}/utils/blockselect/*.cu)
add_library(invp_faiss_gpu STATIC
  ${_g}/GpuDistance.cu ${_g}/GpuResources.cpp ${_g}/StandardGpuResources.cpp
  ${_g}/impl/Distance.cu ${_g}/impl/L2Norm.cu ${_g}/impl/L2Select.cu ${_g}/impl/BroadcastSum.cu
  ${_g}/utils/DeviceUtils.cu ${_g}/utils/StackDeviceMemory.cpp ${_g}/utils/Timer.cpp
  ${_g}/utils/BlockSelectFloat.cu ${_blockselect})
target_include_directories(invp_faiss_gpu PRIVATE ${INVP_FAISS_GPU_SOURCE})
# Users see only faiss/gpu/ from the tree; faiss/*.h keep coming from the installed package.
set(_inc ${CMAKE_CURRENT_BINARY_DIR}/faiss_gpu_include)
file(MAKE_DIRECTORY ${_inc}/faiss)
file(CREATE_LINK ${_g} ${_inc}/faiss/gpu SYMBOLIC)
target_include_directories(invp_faiss_gpu INTERFACE $<BUILD_INTERFACE:${_inc}>)
target_link_libraries(invp_faiss_gpu PUBLIC faiss CUDA::cudart CUDA::cublas)
set_target_properties(invp_faiss_gpu PROPERTIES CUDA_ARCHITECTURES "${INVP_CUDA_ARCHITECTURES}"
                      CUDA_STANDARD 17 POSITION_INDEPENDENT_CODE ON)
# FAISS 1.7.3's headers use uint8_t without <cstdint> (an error under GCC 13).
target_compile_options(invp_faiss_gpu PRIVATE "SHELL:-include cstdint"
                       $<$<COMPILE_LANGUAGE:CUDA>:--expt-extended-lambda -w>)
install(TARGETS invp_faiss_gpu EXPORT invpTargets ARCHIVE DESTINATION lib)
message(STATUS "invp: FAISS GPU search from ${INVP_FAISS_GPU_SOURCE} for CUDA architectures ${INVP_CUDA_ARCHITECTURES}")
