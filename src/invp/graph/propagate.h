// Positive discovery by propagation over the kNN graph (docs/ALGORITHM.md, "Positive
// discovery"). Conventions: anchors B int64 node ids in [0,N); result B×L int64,
// row b = candidate positives of anchors[b], padded on the right with −1.
//   Bfs    (default, the paper): every node at graph distance 1..depth from the anchor,
//          each once, the anchor itself excluded, in BFS order (hop by hop, each hop in
//          neighbour-list order). L = the longest row in the batch (≤ min(N−1, k+…+k^depth)).
//          Cost per anchor: O(k · #nodes within distance depth−1) time; O(N) stamp memory
//          per worker thread, reused across anchors (stamps avoid clearing it).
//   Concat (reference parity): the hop lists concatenated without de-duplication,
//          hop_1 = neighbors[a], hop_{t+1} = neighbors[hop_t] flattened; exactly
//          L = k + k² + … + k^depth entries, duplicates and the anchor itself kept (no −1).
//          Cost O(B·L) time and memory, pure tensor indexing.
#pragma once
#include <invp/graph/knn_graph.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace invp::graph {

enum class PropagationMode { Bfs, Concat };

// Throws invp::Error for depth < 1, anchors that are not 1-D int64 ids in range, an empty
// graph, or a Concat result larger than 2^31 entries.
at::Tensor propagate(const KnnGraph& graph, const at::Tensor& anchors, int depth,
                     PropagationMode mode = PropagationMode::Bfs);

// Analysis only (`invp train --positives oracle`): `propagated` (B×L, −1 padded, as above) with
// every entry whose label differs from its anchor's replaced by −1, in place of the row's
// order (so rows may have −1 inside, which the loss treats as padding). labels: N int64; an
// entry or anchor labelled −1 (unknown) counts as different. Measures what a label-pure
// graph would give; it is not the method, which never sees labels.
at::Tensor keep_same_label(const at::Tensor& propagated, const at::Tensor& anchors, const at::Tensor& labels);

}  // namespace invp::graph

namespace invp::graph {

// The same exact BFS as PropagationMode::Bfs, hop by hop, for one anchor over a graph given
// as a function (node → its neighbour list, most similar first), so that large collections
// can be walked lazily (e.g. neighbours looked up in an ANN index on demand). hops[h] holds
// the nodes first reached at distance h+1, in discovery order; the anchor (which may be
// −1 for a virtual anchor whose list is `first_hop`) never appears. With
// neighbors_of = the rows of a KnnGraph, the concatenated hops equal propagate(..., Bfs).
std::vector<std::vector<int64_t>> bfs_hops(const std::function<std::vector<int64_t>(int64_t)>& neighbors_of,
                                           int64_t anchor, int depth,
                                           const std::vector<int64_t>& first_hop = {});

}  // namespace invp::graph
