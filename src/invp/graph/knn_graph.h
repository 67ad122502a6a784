// The kNN graph over the memory bank used for positive discovery (docs/ALGORITHM.md, "The
// kNN graph"). Conventions:
//   bank        N×D float32 contiguous CPU, rows L2-normalised (inner product = cosine);
//   neighbors   N×k int64, row i = i's k most similar other rows, most similar first;
//               directed (j ∈ row i does not imply i ∈ row j), self excluded;
//   similarities N×k float32 matching `neighbors`, or undefined when unknown (online mode
//               updates without similarities, or a graph started from zeros);
//   labels      N int64, −1 = unknown (only used for diagnostics).
// Two modes: `build` makes one consistent snapshot from the whole bank (this project's
// design, once per epoch); `zeros` + `update_rows` is the reference's online refresh, where
// every training step overwrites the batch's rows.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace invp::graph {

struct GraphStats {
  double build_seconds = 0;      // wall time of the last `build` (0 for online graphs)
  double mean_similarity = 0;    // mean over all edges; NaN when similarities are unknown
  double mutual_share = 0;       // share of edges i→j whose reverse j→i is also an edge
  double same_label_share = -1;  // share of edges joining equal labels (both ≥ 0); −1 if
                                 // no labels were given or no edge has two known labels
};

class KnnGraph {
 public:
  at::Tensor neighbors;     // N×k int64
  at::Tensor similarities;  // N×k float32 or undefined
  double build_seconds = 0;

  // Exact kNN graph of the bank (self excluded) through index::knn_inner_product.
  // Requires 1 ≤ k ≤ N−1; throws invp::Error otherwise.
  // A bank on a GPU is searched where it lives (its neighbour lists are then copied to the
  // host, N·k int64, for propagation): by build_faiss_gpu when this build has FAISS's GPU
  // search and k < 2048, else by build_tensor_ops.
  static KnnGraph build(const at::Tensor& bank, int k, int64_t tile_rows = 4096);

  // Rows [begin, end) of build(bank, k): what one rank of a distributed run searches before
  // the slices are gathered. The same lists as build's rows, self excluded. CPU banks only.
  static KnnGraph build_rows(const at::Tensor& bank, int k, int64_t begin, int64_t end);

  // Approximate graph through index::knn_self_ivf (k-means cells, `probes` searched per row):
  // most of the exact graph's edges at a fraction of its cost. A bank on a GPU gets the exact
  // build_tensor_ops instead.
  static KnnGraph build_ivf(const at::Tensor& bank, int k, int64_t probes, uint64_t seed);

  // The same exact graph with LibTorch on the bank's device: tile_rows rows at a time, a
  // tile × N matmul, the self entry masked, top-k. Results on the host like build's.
  static KnnGraph build_tensor_ops(const at::Tensor& bank, int k, int64_t tile_rows = 4096);

  // The same exact graph by FAISS's GPU brute-force search (faiss::gpu::bfKnn, inner product,
  // float32) straight on the bank's device memory: k + 1 neighbours with the selection fused
  // into the distance tiles, then each row's own entry dropped. FAISS's GPU selection stops
  // at 2048, so k + 1 ≤ 2048. Throws invp::Error in a build without it (faiss_gpu_built()).
  static KnnGraph build_faiss_gpu(const at::Tensor& bank, int k);
  static bool faiss_gpu_built();

  // Online mode start: N×k zeros, as in the reference (meaningless until rows are refreshed;
  // the reference only reads the graph after the warm-up epochs).
  static KnnGraph zeros(int64_t n, int k);

  int64_t num_nodes() const { return neighbors.defined() ? neighbors.size(0) : 0; }
  int k() const { return neighbors.defined() ? int(neighbors.size(1)) : 0; }

  // Online refresh: rows (B int64, in [0,N)) get new neighbour lists (B×k int64 in [0,N)).
  // `sims` (B×k float) updates the similarities when both are known; updating without them
  // drops the stored similarities, since they would no longer match the edges.
  void update_rows(const at::Tensor& rows, const at::Tensor& new_neighbors,
                   const at::Tensor& sims = at::Tensor());

  // Diagnostics over all N·k edges; O(N·k²) time, O(1) extra memory. `labels` may be
  // undefined. Throws invp::Error when labels do not have N entries.
  GraphStats stats(const at::Tensor& labels = at::Tensor()) const;
};

}  // namespace invp::graph
