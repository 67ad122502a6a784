// invp dedup: candidate pairs from the index's own search, re-scored exactly, grouped by
// union-find (see dedup.h).
#include <invp/core/error.h>
#include <invp/core/progress.h>
#include <invp/search/dedup.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <tuple>

namespace invp::search {
namespace {
using torch::Tensor;

// How far below the threshold the index's own scores are taken as candidates: float32
// rounding for indexes that store the vectors as they are, the coding error for compressed
// ones (PQ, SQ), whose scores are estimates. The exact pass decides either way.
constexpr double kExactSlack = 1e-4;
constexpr double kLossySlack = 0.05;
// Mean similarities closer than this are equal: a pair's two members, or the ends of a
// symmetric chain, differ only by rounding, and the smaller id must win.
constexpr double kTie = 1e-12;

bool lossy_codes(const IndexHandle& h) {
  const auto& f = h.info().factory;
  return f.find("PQ") != std::string::npos || f.find("SQ") != std::string::npos;
}

void check_threshold(double t) {
  if (!(t >= -1 && t <= 1)) throw Error("", "the threshold is a cosine similarity in [-1, 1], got " + std::to_string(t));
}

// Rows of `x` (any float type) in double, scaled to unit length.
Tensor unit_rows(const Tensor& x) {
  auto d = x.to(torch::kFloat64);
  return d / d.norm(2, 1, true).clamp_min(1e-300);
}

// Stored vectors up to this size are read once, sequentially, for the exact pass; bigger
// collections are read by id, batch by batch (runs of neighbouring rows in one read).
constexpr int64_t kResidentBytes = int64_t(256) << 20;

// The target's stored vectors for exact re-scoring.
class ExactVectors {
 public:
  explicit ExactVectors(IndexHandle& h) : h_(h) {
    auto& m = h.meta();
    if (m.size() * h.info().dim * int64_t(sizeof(float)) > kResidentBytes) return;
    all_ = torch::empty({m.size(), h.info().dim}, torch::kFloat32);
    for (int64_t start = 0; start < m.size(); start += kResidentBlock) {
      auto rows = m.read(start, std::min(kResidentBlock, m.size() - start));
      all_.narrow(0, start, rows.size()).copy_(rows.embeddings);
      ids_.insert(ids_.end(), rows.ids.begin(), rows.ids.end());
    }
  }
  // Unit rows (double) of IDS (ascending, unique).
  Tensor get(const std::vector<int64_t>& ids) {
    if (!all_.defined()) return unit_rows(h_.vectors(ids));
    std::vector<int64_t> rows;
    for (int64_t id : ids) {
      auto it = std::lower_bound(ids_.begin(), ids_.end(), id);  // meta's ids are increasing
      if (it == ids_.end() || *it != id) throw Error(h_.dir(), "no item with id " + std::to_string(id));
      rows.push_back(int64_t(it - ids_.begin()));
    }
    return unit_rows(all_.index_select(0, torch::from_blob(rows.data(), {int64_t(rows.size())}, torch::kLong)));
  }

 private:
  static constexpr int64_t kResidentBlock = 65536;
  IndexHandle& h_;
  Tensor all_;
  std::vector<int64_t> ids_;
};

// Candidate pairs of one batch: the query's row in the batch and an id of the target index.
struct Candidates {
  std::vector<std::pair<int64_t, int64_t>> pairs;
};

void range_candidates(const index::AnnIndex& ann, const Tensor& q, float cut, Candidates& c) {
  auto r = ann.range_search(q, cut);
  const int64_t* lims = r.lims.data_ptr<int64_t>();
  const int64_t* ids = r.ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < q.size(0); ++i)
    for (int64_t j = lims[i]; j < lims[i + 1]; ++j)
      if (ids[j] >= 0) c.pairs.push_back({i, ids[j]});
}

// Top-k with a score cut (indexes without range search): rows whose k-th hit still scores at
// or above the cut may have more, so they are asked again with twice the k, up to the whole
// index.
void topk_candidates(IndexHandle& target, const Tensor& q, float cut, int k0, Candidates& c) {
  const int64_t n = target.info().size;
  const bool l2 = target.info().recipe.metric == "l2";
  std::vector<int64_t> rows(size_t(q.size(0)));
  std::iota(rows.begin(), rows.end(), 0);
  int64_t k = std::min<int64_t>(std::max(k0, 1), n);
  while (!rows.empty() && k > 0) {
    auto sel = torch::from_blob(rows.data(), {int64_t(rows.size())}, torch::kLong);
    auto res = target.search_ids(q.index_select(0, sel).contiguous(), int(k));
    auto sims = res.similarities;
    if (l2) sims = 1 + sims / 2;  // search scores −|x − y|², unit rows: cos = 1 − d/2
    auto ids = res.indices.accessor<int64_t, 2>();
    auto s = sims.accessor<float, 2>();
    std::vector<int64_t> again;
    for (size_t r = 0; r < rows.size(); ++r) {
      int64_t j = 0;
      for (; j < k && ids[int64_t(r)][j] >= 0 && s[int64_t(r)][j] >= cut; ++j)
        c.pairs.push_back({rows[r], ids[int64_t(r)][j]});
      if (j == k && k < n) again.push_back(rows[r]);
    }
    rows.swap(again);
    k = std::min(2 * k, n);
  }
}

// Keeps the candidates whose exact cosine (stored vectors, in double) is ≥ threshold:
// (query id, target id) pairs; within one index ordered (smaller, larger) and self-pairs dropped.
void rescore(ExactVectors& target, const Tensor& queries, const std::vector<int64_t>& query_ids,
             Candidates& c, bool self, double threshold, std::vector<DuplicatePair>& out) {
  auto& p = c.pairs;
  std::sort(p.begin(), p.end());
  p.erase(std::unique(p.begin(), p.end()), p.end());
  if (self)
    p.erase(std::remove_if(p.begin(), p.end(), [&](auto& x) { return x.second == query_ids[size_t(x.first)]; }),
            p.end());
  if (p.empty()) return;
  std::vector<int64_t> ids;
  for (auto& x : p) ids.push_back(x.second);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  auto vecs = target.get(ids);
  std::vector<int64_t> qrow, vrow;
  for (auto& x : p) {
    qrow.push_back(x.first);
    vrow.push_back(int64_t(std::lower_bound(ids.begin(), ids.end(), x.second) - ids.begin()));
  }
  auto idx = [](std::vector<int64_t>& v) { return torch::from_blob(v.data(), {int64_t(v.size())}, torch::kLong); };
  auto dots = (queries.index_select(0, idx(qrow)) * vecs.index_select(0, idx(vrow))).sum(1).contiguous();
  const double* d = dots.data_ptr<double>();
  for (size_t i = 0; i < p.size(); ++i) {
    if (!(d[i] >= threshold)) continue;
    int64_t a = query_ids[size_t(p[i].first)], b = p[i].second;
    if (self && b < a) std::swap(a, b);
    out.push_back({a, b, d[i]});
  }
}

// Every stored row of SOURCE queried against TARGET, batch by batch.
std::vector<DuplicatePair> scan(IndexHandle& source, IndexHandle& target, bool self, const DedupOptions& o,
                                DedupStats* stats) {
  check_threshold(o.threshold);
  if (o.batch_rows < 1) throw Error("", "dedup batch must be at least one row");
  const auto t0 = std::chrono::steady_clock::now();
  auto& meta = source.meta();
  if (!meta.has_embeddings())
    throw Error(source.dir(), "holds no stored vectors to compare", "rebuild the index with this invp");
  const bool range = target.ann().supports_range_search();
  const float cut = float(o.threshold - (lossy_codes(target) ? kLossySlack : kExactSlack));
  ExactVectors exact(target);
  DedupStats st;
  st.method = range ? "range search" : "top-k";
  std::vector<DuplicatePair> out;
  const int64_t n = target.info().size > 0 ? meta.size() : 0, B = o.batch_rows;
  Progress bar("dedup", (n + B - 1) / B, "items", double(B));
  for (int64_t start = 0; start < n; start += B) {
    auto rows = meta.read(start, std::min(B, n - start));
    auto q = rows.embeddings.to(torch::kFloat32).contiguous();
    Candidates c;
    if (range) {
      range_candidates(target.ann(), q, cut, c);
      if (auto* added = target.added_slice()) range_candidates(*added, q, cut, c);
      if (const auto* live = target.live_ids())  // removed items the FAISS index still holds
        c.pairs.erase(std::remove_if(c.pairs.begin(), c.pairs.end(),
                                     [&](const auto& p) { return !live->contains(p.second); }),
                      c.pairs.end());
    } else {
      topk_candidates(target, q, cut, o.k, c);
    }
    st.candidates += int64_t(c.pairs.size());
    st.queried += rows.size();
    rescore(exact, unit_rows(q), rows.ids, c, self, o.threshold, out);
    bar.update(start / B + 1, std::to_string(out.size()) + " pairs");
  }
  bar.finish();
  std::sort(out.begin(), out.end(), [](auto& x, auto& y) { return std::tie(x.a, x.b) < std::tie(y.a, y.b); });
  out.erase(std::unique(out.begin(), out.end(), [](auto& x, auto& y) { return x.a == y.a && x.b == y.b; }),
            out.end());
  st.pairs = int64_t(out.size());
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (stats) *stats = st;
  return out;
}

// Union-find over positions 0..n-1 (path halving, union by size).
struct UnionFind {
  std::vector<int64_t> parent, size;
  explicit UnionFind(size_t n) : parent(n), size(n, 1) { std::iota(parent.begin(), parent.end(), 0); }
  int64_t find(int64_t x) {
    while (parent[size_t(x)] != x) x = parent[size_t(x)] = parent[size_t(parent[size_t(x)])];
    return x;
  }
  void unite(int64_t a, int64_t b) {
    a = find(a), b = find(b);
    if (a == b) return;
    if (size[size_t(a)] < size[size_t(b)]) std::swap(a, b);
    parent[size_t(b)] = a;
    size[size_t(a)] += size[size_t(b)];
  }
};

// One component (ids ascending): the representative maximises the mean cosine to the others,
// Σ_j v_i·v_j − v_i·v_i over s − 1, computed as v_i·(Σ_j v_j) so a group costs O(s·D).
DedupGroup make_group(IndexHandle& index, const std::vector<int64_t>& ids) {
  auto v = unit_rows(index.vectors(ids));
  const int64_t s = v.size(0);
  auto mean = ((v.mv(v.sum(0)) - (v * v).sum(1)) / double(s - 1)).contiguous();
  const double* m = mean.data_ptr<double>();
  int64_t rep = 0;
  for (int64_t i = 1; i < s; ++i)
    if (m[i] > m[rep] + kTie) rep = i;  // ties (to rounding) keep the smaller id
  auto score = v.mv(v[rep]).contiguous();
  const double* sc = score.data_ptr<double>();
  std::vector<int64_t> order(static_cast<size_t>(s));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
    if ((x == rep) != (y == rep)) return x == rep;
    return sc[x] != sc[y] ? sc[x] > sc[y] : x < y;
  });
  DedupGroup g;
  g.representative = ids[size_t(rep)];
  for (int64_t i : order) g.items.push_back(index.describe(ids[size_t(i)], i == rep ? 1.f : float(sc[i])));
  return g;
}

}  // namespace

std::vector<DuplicatePair> duplicate_pairs(IndexHandle& index, const DedupOptions& opts, DedupStats* stats) {
  return scan(index, index, true, opts, stats);
}

std::vector<DuplicatePair> cross_pairs(IndexHandle& index, IndexHandle& other, const DedupOptions& opts,
                                       DedupStats* stats) {
  if (index.info().model_hash != other.info().model_hash)
    throw Error(other.dir(), "was indexed from another model's embeddings than " + index.dir() + " (model hash differs)",
                "compare indexes built from embeddings of the same model");
  if (index.info().dim != other.info().dim)
    throw Error(other.dir(), "holds " + std::to_string(other.info().dim) + "-d vectors, " + index.dir() + " holds " +
                                 std::to_string(index.info().dim) + "-d");
  return scan(index, other, false, opts, stats);
}

std::vector<DedupGroup> group_duplicates(IndexHandle& index, const std::vector<DuplicatePair>& pairs) {
  std::vector<int64_t> ids;
  for (auto& p : pairs) ids.push_back(p.a), ids.push_back(p.b);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  auto pos = [&](int64_t id) { return int64_t(std::lower_bound(ids.begin(), ids.end(), id) - ids.begin()); };
  UnionFind uf(ids.size());
  for (auto& p : pairs) uf.unite(pos(p.a), pos(p.b));
  std::map<int64_t, std::vector<int64_t>> members;  // root → ids, ascending
  for (size_t i = 0; i < ids.size(); ++i) members[uf.find(int64_t(i))].push_back(ids[i]);
  std::vector<DedupGroup> groups;
  for (auto& [root, m] : members) groups.push_back(make_group(index, m));
  std::sort(groups.begin(), groups.end(), [](const DedupGroup& x, const DedupGroup& y) {
    return x.items.size() != y.items.size() ? x.items.size() > y.items.size() : x.representative < y.representative;
  });
  return groups;
}

std::vector<CrossMatch> cross_matches(IndexHandle& index, IndexHandle& other, const std::vector<DuplicatePair>& pairs) {
  std::map<int64_t, std::vector<std::pair<double, int64_t>>> by_item;
  for (auto& p : pairs) by_item[p.a].push_back({p.score, p.b});
  std::vector<CrossMatch> out;
  for (auto& [id, found] : by_item) {
    std::sort(found.begin(), found.end(), [](auto& x, auto& y) { return x.first != y.first ? x.first > y.first : x.second < y.second; });
    CrossMatch m{index.describe(id, 1.f), {}};
    for (auto& [score, b] : found) m.matches.push_back(other.describe(b, float(score)));
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<float> nearest_neighbour_similarities(IndexHandle& index, const DedupOptions& opts) {
  auto& meta = index.meta();
  if (!meta.has_embeddings())
    throw Error(index.dir(), "holds no stored vectors to compare", "rebuild the index with this invp");
  const int64_t n = meta.size(), B = std::max<int64_t>(1, opts.batch_rows);
  std::vector<float> out;
  if (n < 2) return out;
  ExactVectors exact(index);
  Progress bar("nearest", (n + B - 1) / B, "items", double(B));
  for (int64_t start = 0; start < n; start += B) {
    auto rows = meta.read(start, std::min(B, n - start));
    auto q = rows.embeddings.to(torch::kFloat32).contiguous();
    auto res = index.search_ids(q, 2);  // itself and its nearest other, in some order
    auto ids = res.indices.accessor<int64_t, 2>();
    Candidates c;
    for (int64_t i = 0; i < rows.size(); ++i)
      for (int64_t j = 0; j < 2; ++j)
        if (ids[i][j] >= 0 && ids[i][j] != rows.ids[size_t(i)]) {
          c.pairs.push_back({i, ids[i][j]});
          break;
        }
    std::vector<DuplicatePair> nn;
    rescore(exact, unit_rows(q), rows.ids, c, false, -2, nn);
    for (auto& p : nn) out.push_back(float(p.score));
    bar.update(start / B + 1);
  }
  bar.finish();
  return out;
}

}  // namespace invp::search
