#include <invp/index/library_info.h>

#include <cstdint>  // before FAISS 1.7.3's headers, which use uint8_t without it (GCC 13)
#include <faiss/Index.h>

namespace invp::index {
std::string faiss_version() {
  return std::to_string(FAISS_VERSION_MAJOR) + "." + std::to_string(FAISS_VERSION_MINOR) + "." +
         std::to_string(FAISS_VERSION_PATCH);
}
}  // namespace invp::index
