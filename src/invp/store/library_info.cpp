#include <invp/store/library_info.h>

#include <H5public.h>

namespace invp::store {
std::string hdf5_version() {
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  return std::to_string(maj) + "." + std::to_string(min) + "." + std::to_string(rel);
}
}  // namespace invp::store
