// CIFAR-10/100 binary batches: open, then decode a few items.
#include <invp/data/dataset.h>

#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto p = invp::fuzz::temp_file("data_batch_1.bin", data, size);
  return invp::fuzz::expect_clean([&] {
    auto ds = invp::data::open_dataset(p);
    for (size_t i = 0; i < ds->size() && i < 8; ++i) ds->get(i);
  });
}
