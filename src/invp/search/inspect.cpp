#include <invp/core/error.h>
#include <invp/graph/propagate.h>
#include <invp/index/ann_index.h>
#include <invp/search/inspect.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

namespace invp::search {
namespace {
constexpr int64_t kBlock = 65536;

std::string name_of(IndexHandle& index, int32_t label) {
  const auto& c = index.categories();
  if (label >= 0 && size_t(label) < c.size()) return c[size_t(label)];
  return label >= 0 ? std::to_string(label) : "?";
}

int64_t num_classes(IndexHandle& index) {
  const auto& l = index.labels();
  int32_t mx = -1;
  for (int32_t x : l) mx = std::max(mx, x);
  return std::max<int64_t>(int64_t(index.categories().size()), int64_t(mx) + 1);
}

void require_labels(IndexHandle& index) {
  if (!index.has_labels())
    throw Error(index.dir(), "the collection has no labels",
                "use inspect --clusters N for pseudo-categories of an unlabelled collection");
}
}  // namespace

torch::Tensor category_centroids(IndexHandle& index, int64_t c) {
  auto& meta = index.meta();
  auto sums = torch::zeros({c, meta.dim()}, torch::kFloat64);
  for (int64_t start = 0; start < meta.size(); start += kBlock) {
    auto rows = meta.read(start, std::min(kBlock, meta.size() - start));
    auto lab = torch::tensor(std::vector<int64_t>(rows.labels.begin(), rows.labels.end()), torch::kLong);
    auto keep = lab.ge(0).logical_and(lab.lt(c));
    sums.index_add_(0, lab.masked_select(keep), rows.embeddings.index({keep}).to(torch::kFloat64));
  }
  return torch::nn::functional::normalize(sums.to(torch::kFloat32),
                                          torch::nn::functional::NormalizeFuncOptions().dim(1));
}

std::vector<CategoryScore> nearest_categories(IndexHandle& index, const torch::Tensor& query, int k,
                                              double sigma, int64_t exclude_id) {
  require_labels(index);
  const int64_t c = num_classes(index);
  auto hits = index.search(query, k, {exclude_id})[0];
  std::vector<double> votes(size_t(c), 0.0);
  double total = 0;
  for (const auto& h : hits) {
    if (h.label < 0 || h.label >= c) continue;
    double w = std::exp(double(h.score) / sigma - 1.0 / sigma);  // shifted: max weight 1
    votes[size_t(h.label)] += w;
    total += w;
  }
  auto cos = torch::mv(category_centroids(index, c), query[0].to(torch::kFloat32));
  std::vector<CategoryScore> out;
  for (int64_t l = 0; l < c; ++l) {
    CategoryScore s;
    s.label = int32_t(l);
    s.name = name_of(index, s.label);
    s.vote = total > 0 ? votes[size_t(l)] / total : 0;
    s.centroid = cos[l].item<double>();
    out.push_back(s);
  }
  std::sort(out.begin(), out.end(), [](const CategoryScore& a, const CategoryScore& b) {
    return a.vote != b.vote ? a.vote > b.vote : a.centroid > b.centroid;
  });
  return out;
}

CategoryReport category_report(IndexHandle& index, int k, int64_t max_queries, uint64_t seed, int top_pairs) {
  require_labels(index);
  auto& meta = index.meta();
  const int64_t n = meta.size(), c = num_classes(index);
  const auto& labels = index.labels();
  const auto& ids = index.ids();
  // Which rows to query: all, or an even random sample.
  std::vector<char> pick(size_t(n), max_queries >= n ? 1 : 0);
  if (max_queries < n) {
    std::mt19937_64 rng(seed ^ 0xca7ULL);
    std::vector<int64_t> all(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) all[size_t(i)] = i;
    std::shuffle(all.begin(), all.end(), rng);
    for (int64_t i = 0; i < max_queries; ++i) pick[size_t(all[size_t(i)])] = 1;
  }
  std::vector<double> same(size_t(c), 0);
  std::vector<int64_t> items(size_t(c), 0);
  std::map<std::pair<int32_t, int32_t>, int64_t> cross;
  CategoryReport r;
  r.k = k;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t count = std::min(kBlock, n - start);
    std::vector<int64_t> rows_sel;
    for (int64_t i = start; i < start + count; ++i)
      if (pick[size_t(i)] && labels[size_t(i)] >= 0) rows_sel.push_back(i);
    if (rows_sel.empty()) continue;
    auto block = meta.read(start, count).embeddings;
    auto sel = torch::tensor(rows_sel, torch::kLong) - start;
    auto q = block.index_select(0, sel).contiguous();
    auto res = index.search_ids(q, k + 1);  // the whole directory: added slice, re-ranking, tombstones
    auto rid = res.indices.accessor<int64_t, 2>();
    for (size_t qi = 0; qi < rows_sel.size(); ++qi) {
      const int64_t row = rows_sel[qi];
      const int32_t a = labels[size_t(row)];
      int got = 0, match = 0;
      for (int64_t j = 0; j < res.indices.size(1) && got < k; ++j) {
        const int64_t id = rid[int64_t(qi)][j];
        if (id < 0 || id == ids[size_t(row)]) continue;
        const int64_t nr = index.row_of(id);
        if (nr < 0) continue;
        ++got;
        const int32_t b = labels[size_t(nr)];
        if (b == a) ++match;
        else if (b >= 0) ++cross[{std::min(a, b), std::max(a, b)}];
      }
      if (got == 0) continue;
      same[size_t(a)] += double(match) / got;
      ++items[size_t(a)];
      r.purity += double(match) / got;
      ++r.queried;
    }
  }
  if (r.queried > 0) r.purity /= double(r.queried);
  for (int64_t l = 0; l < c; ++l) {
    if (items[size_t(l)] == 0) continue;
    r.categories.push_back({int32_t(l), name_of(index, int32_t(l)), items[size_t(l)],
                            same[size_t(l)] / double(items[size_t(l)])});
  }
  for (auto& [pair, count] : cross) {
    const double slots = double(k) * double(items[size_t(pair.first)] + items[size_t(pair.second)]);
    r.confused.push_back({pair.first, pair.second, name_of(index, pair.first), name_of(index, pair.second),
                          slots > 0 ? double(count) / slots : 0});
  }
  std::sort(r.confused.begin(), r.confused.end(),
            [](const ConfusedPair& x, const ConfusedPair& y) { return x.share > y.share; });
  if (int(r.confused.size()) > top_pairs) r.confused.resize(size_t(top_pairs));
  return r;
}

std::vector<Cluster> cluster_collection(IndexHandle& index, int clusters, int per_cluster,
                                        int64_t max_points, uint64_t seed) {
  auto& meta = index.meta();
  const int64_t n = meta.size();
  if (clusters < 2 || clusters > n) throw Error(index.dir(), "--clusters must be between 2 and the collection size");
  // Sample rows for k-means (k-means on more than ~100k points adds little).
  std::vector<torch::Tensor> parts;
  const double keep = std::min(1.0, double(max_points) / double(n));
  std::mt19937_64 rng(seed ^ 0xc1u);
  for (int64_t start = 0; start < n; start += kBlock) {
    auto e = meta.read(start, std::min(kBlock, n - start)).embeddings;
    if (keep < 1.0) {
      std::vector<int64_t> sel;
      for (int64_t i = 0; i < e.size(0); ++i)
        if (double(rng() >> 11) * 0x1.0p-53 < keep) sel.push_back(i);
      e = e.index_select(0, torch::tensor(sel, torch::kLong));
    }
    parts.push_back(e);
  }
  auto x = torch::cat(parts).contiguous();
  auto km = index::kmeans(x, clusters, 20, seed);
  auto sizes = torch::bincount(km.assignments, {}, clusters);
  auto near = index.search(km.centroids, per_cluster);
  std::vector<Cluster> out(static_cast<size_t>(clusters));
  for (int i = 0; i < clusters; ++i) {
    out[size_t(i)].size = sizes[i].item<int64_t>();
    out[size_t(i)].closest = near[size_t(i)];
  }
  return out;
}

PropagationView propagation(IndexHandle& index, const torch::Tensor& query, int k, int depth) {
  auto top = index.search(query, k + 1)[0];
  PropagationView v;
  std::vector<int64_t> first;
  if (!top.empty() && top[0].score >= 0.9999f) {
    v.anchor = top[0];
  } else {
    v.anchor.id = -1;
    for (int i = 0; i < int(top.size()) && i < k; ++i) first.push_back(top[size_t(i)].id);
  }
  std::map<int64_t, float> score_to_anchor;
  auto neighbors_of = [&](int64_t id) {
    auto hits = index.search(index.vectors({id}), k, {id})[0];
    std::vector<int64_t> out;
    for (auto& h : hits) out.push_back(h.id);
    return out;
  };
  auto hops = graph::bfs_hops(neighbors_of, v.anchor.id, depth, first);
  for (auto& hop : hops) {
    auto vecs = index.vectors(hop);
    auto sims = torch::mv(vecs, query[0]);
    std::vector<Hit> row;
    for (size_t i = 0; i < hop.size(); ++i) row.push_back(index.describe(hop[i], sims[int64_t(i)].item<float>()));
    v.hops.push_back(std::move(row));
  }
  return v;
}

}  // namespace invp::search
