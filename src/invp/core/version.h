// Versions of invp and of the libraries it was built with.
#pragma once
#include <string>

namespace invp {
std::string version();
std::string torch_version();
}  // namespace invp
