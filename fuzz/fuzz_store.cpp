// embeddings.h5 / meta.h5: open with validation, then read every row in blocks.
#include <invp/store/embedding_store.h>

#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto p = invp::fuzz::temp_file("embeddings.h5", data, size);
  return invp::fuzz::expect_clean([&] {
    invp::store::EmbeddingReader r(p);
    for (int64_t s = 0; s < r.size() && s < 4096; s += 1024) r.read(s, std::min<int64_t>(1024, r.size() - s));
  });
}
