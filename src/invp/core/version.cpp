#include <invp/core/version.h>

#include <torch/cuda.h>
#include <torch/version.h>

#include <string>

namespace invp {
#ifndef INVP_VERSION
#define INVP_VERSION "dev"
#endif
std::string version() { return INVP_VERSION; }
// Debian's 1.13.1 reports itself as 1.13.0 (docs/ARCHITECTURE.md).
std::string torch_version() { return TORCH_VERSION; }

std::string cuda_report() {
  if (!torch::cuda::is_available()) {
#ifdef INVP_WITH_CUDA
    return "built with CUDA, no device visible";
#else
    return "no (CPU build; see scripts/gpu_build.sh)";
#endif
  }
  return std::to_string(torch::cuda::device_count()) + " device(s)";
}
}  // namespace invp
