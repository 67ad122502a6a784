#include <invp/index/library_info.h>

#include <faiss/Index.h>

namespace invp::index {
std::string faiss_version() {
  return std::to_string(FAISS_VERSION_MAJOR) + "." + std::to_string(FAISS_VERSION_MINOR) + "." +
         std::to_string(FAISS_VERSION_PATCH);
}
}  // namespace invp::index
