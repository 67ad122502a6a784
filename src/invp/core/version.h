// Versions of invp and of the libraries it was built with.
#pragma once
#include <string>

namespace invp {
std::string version();
std::string torch_version();
// "N device(s)" when LibTorch sees CUDA devices, else why not.
std::string cuda_report();
}  // namespace invp
