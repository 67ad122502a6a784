// Approximate kNN graph of a set against itself by inverted lists, for the per-epoch graph
// rebuild where the exact all-pairs search dominates: an exact 60k × 60k × 128 search is
// 0.92 TFLOP, a sizeable share of a CPU-preset epoch (BENCHMARKS.md, "Session 5"). Conventions
// as in exact_knn.h:
// base N×D float32 contiguous CPU rows (L2-normalised, so inner product = cosine); results
// N×k, self excluded, rows sorted by descending similarity.
#pragma once
#include <invp/index/exact_knn.h>

#include <cstdint>

namespace invp::index {

struct IvfKnnOptions {
  int64_t lists = 0;       // inverted lists (k-means cells); 0 = round(sqrt(N)), at most N/8
  int64_t probes = 8;      // cells searched per row, nearest centroids first
  int iterations = 8;      // k-means iterations
  int64_t train_rows = 0;  // k-means sample; 0 = min(N, 64 · lists)
  uint64_t seed = 1234;    // k-means++ seeding and the sample
};

// Each row's k most similar other rows among the rows of its `probes` nearest cells. Spherical
// k-means (index::kmeans) splits the rows into cells; every cell is then one matrix product of
// the rows that probe it against its members, so the search runs at GEMM speed and costs about
// probes / lists of the exact search. A row left with fewer than k candidates (tiny cells) is
// completed exactly. probes ≥ lists (or N too small for lists) gives the exact graph.
// Deterministic for a given input, options and thread count. Requires 1 ≤ k ≤ N−1; throws
// invp::Error on bad shapes, dtypes, devices or options.
KnnResult knn_self_ivf(const at::Tensor& base, int k, const IvfKnnOptions& options = {});

}  // namespace invp::index
