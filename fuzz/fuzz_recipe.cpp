// Index recipes (indexes/*.toml).
#include <invp/index/ann_index.h>

#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto p = invp::fuzz::temp_file("recipe.toml", data, size);
  return invp::fuzz::expect_clean([&] { invp::index::load_recipe(p); });
}
