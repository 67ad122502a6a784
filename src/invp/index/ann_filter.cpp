// AnnIndex: search restricted to a set of ids, and removal in place.
#include <invp/core/error.h>
#include <invp/index/ann_detail.h>
#include <invp/index/ann_index.h>

#include <ATen/ATen.h>
#include <faiss/IndexFlat.h>
#include <faiss/impl/IDSelector.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

namespace invp::index {
namespace {

using idx_t = faiss::Index::idx_t;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Over-fetching answers queries in blocks of at most this many candidates (ids + scores).
constexpr int64_t kCandidatesPerBlock = int64_t(1) << 24;


// Restores an HNSW's efSearch when over-fetching is done with it.
struct EfGuard {
  faiss::IndexHNSW* hnsw;
  int saved;
  explicit EfGuard(faiss::IndexHNSW* h) : hnsw(h), saved(h ? h->hnsw.efSearch : 0) {}
  void raise_to(int64_t fetch) const {
    if (hnsw) hnsw->hnsw.efSearch = int(std::max<int64_t>(saved, fetch));
  }
  ~EfGuard() {
    if (hnsw) hnsw->hnsw.efSearch = saved;
  }
};

// Admitted items up to this share of the index are scored exactly (exact_subset): a filter
// that selective leaves an index's search structure little to work with (the nearest admitted
// items sit in lists an IVF probe does not reach, beyond what an HNSW beam holds), while
// scoring them all costs no more than a few probes.
constexpr double kExactShare = 0.1;
// FAISS 1.7.3 scans a Flat index with an IDSelector one vector at a time (no BLAS), slower than
// copying out the admitted vectors and scoring them with BLAS (BENCHMARKS.md) for any share
// measured; where most items are admitted, an unfiltered BLAS search for k / selectivity and
// dropping the rest is faster still, and as exact.
constexpr double kFlatExactBelow = 0.5;
// HNSW over-fetching deep into the graph loses recall where the admitted items sit in other
// clusters than the query's (a category), and scoring a quarter of the items exactly was as
// fast as over-fetching for it (BENCHMARKS.md).
constexpr double kHnswExactBelow = 0.25;

// The admitted vectors and their ids, reconstructed from the index (IVF: in the space of its
// pre-transform, where queries are compared too).
void gather(const faiss::Index* target, const faiss::IndexIDMap* map, const faiss::IndexIVF* ivf,
            const IdSet& allowed, std::vector<float>& vecs, std::vector<int64_t>& ids) {
  const size_t d = size_t(target->d);
  if (ivf) {
    for (size_t l = 0; l < ivf->nlist; ++l) {
      const size_t len = ivf->invlists->list_size(l);
      if (len == 0) continue;
      faiss::InvertedLists::ScopedIds lid(ivf->invlists, l);
      for (size_t j = 0; j < len; ++j) {
        if (!allowed.contains(lid[j])) continue;
        ids.push_back(lid[j]);
        vecs.resize(vecs.size() + d);
        ivf->reconstruct_from_offset(int64_t(l), int64_t(j), vecs.data() + vecs.size() - d);
      }
    }
    return;
  }
  for (size_t i = 0; i < map->id_map.size(); ++i) {
    if (!allowed.contains(map->id_map[i])) continue;
    ids.push_back(map->id_map[i]);
    vecs.resize(vecs.size() + d);
    map->index->reconstruct(idx_t(i), vecs.data() + vecs.size() - d);
  }
}

// Top k of every query over the gathered rows (similarity: inner product, or −squared L2).
void exact_subset(const float* x, int64_t q, int64_t d, const std::vector<float>& vecs,
                  const std::vector<int64_t>& ids, bool l2, KnnResult& r) {
  const int64_t m = int64_t(ids.size()), k = r.indices.size(1), kk = std::min(k, m);
  if (m == 0) return;
  auto base = at::from_blob(const_cast<float*>(vecs.data()), {m, d}, at::kFloat);
  auto id = at::from_blob(const_cast<int64_t*>(ids.data()), {m}, at::kLong);
  auto norms = l2 ? base.pow(2).sum(1) : at::Tensor();
  const int64_t block = std::max<int64_t>(1, kCandidatesPerBlock / m);
  for (int64_t s = 0; s < q; s += block) {
    const int64_t e = std::min(q, s + block);
    auto qs = at::from_blob(const_cast<float*>(x) + s * d, {e - s, d}, at::kFloat);
    auto sims = at::matmul(qs, base.t());
    if (l2) sims = 2 * sims - norms.unsqueeze(0) - qs.pow(2).sum(1, true);
    auto top = sims.topk(kk, 1, true, true);
    r.similarities.slice(0, s, e).narrow(1, 0, kk).copy_(std::get<0>(top));
    r.indices.slice(0, s, e).narrow(1, 0, kk).copy_(id.index_select(0, std::get<1>(top).flatten()).view({e - s, kk}));
  }
}

}  // namespace

KnnResult AnnIndex::search(const at::Tensor& queries, int k, const IdSet& allowed, FilterStats* stats) const {
  detail::check_matrix(queries, dim(), "queries");
  if (k < 1) throw Error("", "k must be ≥ 1, got " + std::to_string(k));
  FilterStats st;
  const int64_t q = queries.size(0), n = size();
  KnnResult r{at::full({q, k}, -1, at::kLong), at::full({q, k}, kNegInf, at::kFloat)};
  if (q == 0 || n == 0 || allowed.count() == 0) {
    st.exhausted = q > 0;
    if (stats) *stats = st;
    return r;
  }
  const double selectivity = std::min(1.0, double(allowed.count()) / double(n));
  const int64_t kk = std::min<int64_t>(k, n);
  auto* map = dynamic_cast<const faiss::IndexIDMap*>(impl_->index.get());
  const faiss::Index* target = impl_->index.get();
  const float* x = queries.data_ptr<float>();
  std::unique_ptr<float[]> transformed;
  if (auto* p = dynamic_cast<const faiss::IndexPreTransform*>(target)) {
    const float* xt = p->apply_chain(q, x);
    if (xt != x) transformed.reset(const_cast<float*>(xt));
    x = xt, target = p->index;
  }
  const bool ivf = impl_->ivf && target == impl_->ivf;
  const bool flat = map && dynamic_cast<const faiss::IndexFlat*>(map->index);
  const double exact_below = flat ? kFlatExactBelow : impl_->hnsw ? kHnswExactBelow : kExactShare;
  if ((ivf || map) && selectivity <= exact_below) {
    std::vector<float> vecs;
    std::vector<int64_t> got;
    try {
      gather(target, map, ivf ? impl_->ivf : nullptr, allowed, vecs, got);
    } catch (const std::exception& e) {
      throw Error("", "reading the admitted vectors of " + impl_->factory + " failed: " + e.what());
    }
    exact_subset(x, q, int64_t(target->d), vecs, got, impl_->l2(), r);
    st.exact = true;
    st.exhausted = int64_t(got.size()) < k;
    if (stats) *stats = st;
    return r;
  }
  faiss::IDSelectorBitmap bitmap(size_t(allowed.bitmap_bytes()), allowed.bitmap());
  at::Tensor ids = at::empty({q, kk}, at::kLong), sims = at::empty({q, kk}, at::kFloat);
  try {
    if (ivf) {
      faiss::SearchParametersIVF p;
      p.sel = &bitmap;
      // The admitted share of each list is about the selectivity s, so nprobe/s lists hold as
      // many admitted candidates as an unfiltered search scans; but the nearest admitted items
      // lie farther out than the nearest items, in lists ranked lower, so the probe reaches
      // (1 + log2(1/s))^2 times further. Skipped (not admitted) entries cost an id check only.
      const double spread = 1 + std::log2(1 / selectivity);
      const double reach = spread * spread / selectivity;
      p.nprobe = size_t(std::min<double>(double(impl_->ivf->nlist), std::ceil(double(impl_->ivf->nprobe) * reach)));
      p.max_codes = impl_->ivf->max_codes;
      impl_->ivf->search(q, x, kk, sims.data_ptr<float>(), ids.data_ptr<int64_t>(), &p);
      // Queries short of k probe every list once more: then short means exhausted.
      auto short_rows = ids.select(1, kk - 1).lt(0).nonzero().flatten();
      if (short_rows.numel() > 0 && p.nprobe < impl_->ivf->nlist) {
        p.nprobe = impl_->ivf->nlist;
        auto xs = at::from_blob(const_cast<float*>(x), {q, int64_t(impl_->ivf->d)}, at::kFloat).index_select(0, short_rows).contiguous();
        auto si = at::empty({short_rows.numel(), kk}, at::kLong);
        auto ss = at::empty({short_rows.numel(), kk}, at::kFloat);
        impl_->ivf->search(xs.size(0), xs.data_ptr<float>(), kk, ss.data_ptr<float>(), si.data_ptr<int64_t>(), &p);
        ids.index_copy_(0, short_rows, si);
        sims.index_copy_(0, short_rows, ss);
      }
      st.in_faiss = true;
    }
  } catch (const std::exception& e) {
    throw Error("", "filtered search of " + impl_->factory + " failed: " + e.what());
  }
  if (st.in_faiss) {
    if (impl_->l2()) sims.neg_();
    sims.masked_fill_(ids.lt(0), kNegInf);
    r.indices.narrow(1, 0, kk).copy_(ids);
    r.similarities.narrow(1, 0, kk).copy_(sims);
    st.exhausted = ids.lt(0).any().item<bool>();
    if (stats) *stats = st;
    return r;
  }
  // Over-fetching: whole searches, admitted hits kept in order, more for queries still short.
  EfGuard ef(impl_->hnsw);
  auto out_i = r.indices.accessor<int64_t, 2>();
  auto out_s = r.similarities.accessor<float, 2>();
  std::vector<int64_t> pending(static_cast<size_t>(q)), found(static_cast<size_t>(q), 0);
  for (int64_t i = 0; i < q; ++i) pending[size_t(i)] = i;
  int64_t fetch = std::min<int64_t>(n, std::max<int64_t>(k, int64_t(std::ceil(1.25 * k / selectivity))));
  while (!pending.empty()) {
    ef.raise_to(fetch);
    st.fetched = std::max(st.fetched, fetch);
    const int64_t block = std::max<int64_t>(1, kCandidatesPerBlock / fetch);
    for (size_t b = 0; b < pending.size(); b += size_t(block)) {
      const size_t e = std::min(pending.size(), b + size_t(block));
      auto rows = at::from_blob(pending.data() + b, {int64_t(e - b)}, at::kLong);
      auto res = search(queries.index_select(0, rows).contiguous(), int(fetch));
      auto ri = res.indices.accessor<int64_t, 2>();
      auto rs = res.similarities.accessor<float, 2>();
      for (size_t j = b; j < e; ++j) {
        const int64_t row = pending[j];
        int64_t& got = found[size_t(row)];
        got = 0;
        r.indices[row].fill_(-1);
        r.similarities[row].fill_(kNegInf);
        for (int64_t c = 0; c < fetch && got < k; ++c) {
          const int64_t id = ri[int64_t(j - b)][c];
          if (id < 0 || !allowed.contains(id)) continue;
          out_i[row][got] = id, out_s[row][got] = rs[int64_t(j - b)][c], ++got;
        }
      }
    }
    std::vector<int64_t> still;
    for (int64_t row : pending)
      if (found[size_t(row)] < k) (fetch < n ? still.push_back(row) : void(st.exhausted = true));
    pending.swap(still);
    fetch = std::min<int64_t>(n, fetch * 4);
  }
  if (stats) *stats = st;
  return r;
}

bool AnnIndex::can_remove() const { return !impl_->hnsw && !on_disk(); }

int64_t AnnIndex::remove(const std::vector<int64_t>& ids) {
  if (!can_remove())
    throw Error("", impl_->factory + (on_disk() ? " maps its lists read-only from disk" : " cannot remove vectors"),
                "keep a tombstone set for it instead");
  if (ids.empty()) return 0;
  try {
    faiss::IDSelectorBatch sel(ids.size(), ids.data());
    return int64_t(impl_->index->remove_ids(sel));
  } catch (const std::exception& e) {
    throw Error("", "removing from " + impl_->factory + " failed: " + e.what());
  }
}

}  // namespace invp::index
