// Exact inner-product k-nearest-neighbour search on CPU through FAISS (the only stage that
// touches FAISS; callers see tensors). Conventions for every function here:
//   queries  Q×D float32, contiguous, CPU (rows of L2-normalised features, so inner
//            product = cosine similarity);
//   base     N×D float32, contiguous, CPU, same D;
//   result   indices Q×k int64 into base rows, similarities Q×k float32, each row sorted
//            by descending similarity.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace invp::index {

struct KnnResult {
  at::Tensor indices;       // Q×k int64
  at::Tensor similarities;  // Q×k float32
};

// k nearest base rows of every query by inner product. With exclude_self the queries are
// base rows 0..Q-1 and each query's own row is dropped (k+1 are searched; if ties push the
// self id out of the k+1, the last one is dropped instead), so k ≤ N-1 is required;
// otherwise 1 ≤ k ≤ N. Queries are processed tile_rows at a time, so the extra memory is
// O(tile_rows·k) beyond the inputs and the Q×k outputs. Throws invp::Error on bad shapes,
// dtypes, devices or k.
// self_offset: with exclude_self, the queries are base rows self_offset..self_offset+Q-1 (a
// slice of the base, as one rank of a distributed graph build searches).
KnnResult knn_inner_product(const at::Tensor& queries, const at::Tensor& base, int k,
                            bool exclude_self, int64_t tile_rows = 4096, int64_t self_offset = 0);

}  // namespace invp::index
