// checkpoint.pt (a LibTorch archive) through read_checkpoint.
#include <invp/train/checkpoint.h>

#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto p = invp::fuzz::temp_file("checkpoint.pt", data, size);
  return invp::fuzz::expect_clean([&] { invp::train::read_checkpoint(p); });
}
