// The image decode path (every format OpenCV reads), in RGB and grey.
#include <invp/data/decode.h>

#include "fuzz_util.h"

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  invp::fuzz::expect_clean([&] { invp::data::decode_image(bytes, 3, "fuzz-input"); });
  return invp::fuzz::expect_clean([&] { invp::data::decode_image(bytes, 1, "fuzz-input"); });
}
