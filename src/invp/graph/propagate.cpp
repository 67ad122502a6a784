#include <invp/core/error.h>
#include <invp/graph/propagate.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

namespace invp::graph {
namespace {

at::Tensor propagate_concat(const at::Tensor& nb, const at::Tensor& anchors, int depth) {
  const int64_t b = anchors.size(0), k = nb.size(1);
  // Refuse before allocating: k^depth grows fast (k=200, depth=3 → 8M entries per anchor).
  double total = 0, hop = 1;
  for (int t = 0; t < depth; ++t) total += (hop *= double(k));
  if (total * double(std::max<int64_t>(b, 1)) > double(int64_t(1) << 31))
    throw Error("", "propagation: concat mode would produce " + std::to_string(total) +
                        " entries per anchor for " + std::to_string(b) + " anchors",
                "lower the depth or k, or use BFS");
  std::vector<at::Tensor> hops;
  at::Tensor cur = nb.index_select(0, anchors);  // B×k
  hops.push_back(cur);
  for (int t = 1; t < depth; ++t) {
    cur = nb.index_select(0, cur.reshape({-1})).view({b, cur.size(1) * k});  // B×k^{t+1}
    hops.push_back(cur);
  }
  return at::cat(hops, 1);
}

at::Tensor propagate_bfs(const at::Tensor& nb_t, const at::Tensor& anchors_t, int depth) {
  const int64_t n = nb_t.size(0), k = nb_t.size(1), b = anchors_t.size(0);
  const int64_t* nb = nb_t.data_ptr<int64_t>();
  const int64_t* anchors = anchors_t.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> found(static_cast<size_t>(b));
  at::parallel_for(0, b, 1, [&](int64_t begin, int64_t end) {
    // stamp[v] == current anchor's stamp ⇔ v already seen for that anchor.
    std::vector<uint32_t> stamp(size_t(n), 0);
    uint32_t cur_stamp = 0;
    std::vector<int64_t> frontier, next;
    for (int64_t a = begin; a < end; ++a) {
      if (++cur_stamp == 0) {  // wrapped: clear once every 2^32 anchors
        std::fill(stamp.begin(), stamp.end(), 0);
        cur_stamp = 1;
      }
      auto& out = found[size_t(a)];
      const int64_t src = anchors[a];
      stamp[size_t(src)] = cur_stamp;  // the anchor is never its own positive
      frontier.assign(1, src);
      for (int t = 0; t < depth && !frontier.empty(); ++t) {
        next.clear();
        for (int64_t u : frontier)
          for (int64_t c = 0; c < k; ++c) {
            const int64_t v = nb[u * k + c];
            if (stamp[size_t(v)] == cur_stamp) continue;
            stamp[size_t(v)] = cur_stamp;
            next.push_back(v);
          }
        out.insert(out.end(), next.begin(), next.end());
        frontier.swap(next);
      }
    }
  });
  size_t width = 0;
  for (const auto& f : found) width = std::max(width, f.size());
  auto result = at::full({b, int64_t(width)}, -1, at::kLong);
  int64_t* rp = result.data_ptr<int64_t>();
  for (int64_t a = 0; a < b; ++a)
    std::copy(found[size_t(a)].begin(), found[size_t(a)].end(), rp + a * int64_t(width));
  return result;
}

}  // namespace

at::Tensor propagate(const KnnGraph& graph, const at::Tensor& anchors, int depth,
                     PropagationMode mode) {
  if (depth < 1)
    throw Error("", "propagation: depth must be ≥ 1, got " + std::to_string(depth));
  if (!graph.neighbors.defined() || graph.neighbors.dim() != 2 || graph.neighbors.numel() == 0 ||
      graph.neighbors.scalar_type() != at::kLong)
    throw Error("", "propagation: the kNN graph is empty or not an N×k int64 tensor");
  if (!anchors.defined() || anchors.dim() != 1 || anchors.scalar_type() != at::kLong)
    throw Error("", "propagation: anchors must be a 1-D int64 tensor");
  auto nb = graph.neighbors.to(at::kCPU).contiguous();
  auto an = anchors.to(at::kCPU).contiguous();
  const int64_t n = nb.size(0);
  // Range checks up front so traversal can index raw memory (and index_select never
  // raises a c10::Error instead of our one-line error). O(N·k + B), vectorised.
  auto check = [n](const at::Tensor& t, const char* what) {
    if (t.numel() == 0) return;
    const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
    if (lo < 0 || hi >= n)
      throw Error("", std::string("propagation: ") + what + " outside [0, " + std::to_string(n) +
                          "): min " + std::to_string(lo) + ", max " + std::to_string(hi));
  };
  check(an, "anchor ids");
  check(nb, "graph neighbour ids");
  return mode == PropagationMode::Concat ? propagate_concat(nb, an, depth)
                                         : propagate_bfs(nb, an, depth);
}

at::Tensor keep_same_label(const at::Tensor& propagated, const at::Tensor& anchors, const at::Tensor& labels) {
  if (propagated.numel() == 0) return propagated;
  auto prop = propagated.to(at::kCPU);
  auto lab = labels.to(at::kCPU, at::kLong);
  auto theirs = lab.index_select(0, prop.clamp_min(0).flatten()).view_as(prop);
  auto own = lab.index_select(0, anchors.to(at::kCPU, at::kLong)).unsqueeze(1);
  auto keep = (theirs == own) & own.ge(0) & prop.ge(0);
  return prop.masked_fill(keep.logical_not(), -1).to(propagated.device());
}

}  // namespace invp::graph

namespace invp::graph {

std::vector<std::vector<int64_t>> bfs_hops(const std::function<std::vector<int64_t>(int64_t)>& neighbors_of,
                                           int64_t anchor, int depth,
                                           const std::vector<int64_t>& first_hop) {
  if (depth < 1) throw Error("", "propagation depth must be >= 1");
  std::unordered_set<int64_t> seen{anchor};
  std::vector<std::vector<int64_t>> hops;
  std::vector<int64_t> frontier{anchor};
  for (int h = 0; h < depth && !frontier.empty(); ++h) {
    std::vector<int64_t> next;
    for (int64_t node : frontier) {
      auto nb = (h == 0 && anchor < 0) ? first_hop : neighbors_of(node);
      for (int64_t j : nb)
        if (j >= 0 && seen.insert(j).second) next.push_back(j);
    }
    if (next.empty()) break;
    hops.push_back(next);
    frontier = std::move(next);
  }
  return hops;
}

}  // namespace invp::graph
