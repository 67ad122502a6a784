#include <invp/core/version.h>

#include <torch/version.h>

namespace invp {
#ifndef INVP_VERSION
#define INVP_VERSION "dev"
#endif
std::string version() { return INVP_VERSION; }
// Debian's 1.13.1 reports itself as 1.13.0 (CONVENTIONS.md).
std::string torch_version() { return TORCH_VERSION; }
}  // namespace invp
