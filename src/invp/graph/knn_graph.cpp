#include <invp/core/error.h>
#include <invp/graph/knn_graph.h>
#include <invp/index/exact_knn.h>
#include <invp/index/ivf_knn.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#ifdef INVP_WITH_FAISS_GPU
#include <cstdint>  // before FAISS 1.7.3's headers (GCC 13)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <faiss/gpu/GpuDistance.h>
#include <faiss/gpu/StandardGpuResources.h>

#include <mutex>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>

namespace invp::graph {
namespace {

void check_ids(const at::Tensor& ids, int64_t n, const char* what) {
  if (ids.numel() == 0) return;
  const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
  if (lo < 0 || hi >= n)
    throw Error("", std::string("kNN graph: ") + what + " contain ids outside [0, " +
                        std::to_string(n) + "): min " + std::to_string(lo) + ", max " +
                        std::to_string(hi));
}

constexpr int kFaissGpuMaxK = 2048;  // GPU_MAX_SELECTION_K of FAISS 1.7.3's GPU code

void check_bank(const at::Tensor& bank) {
  if (!bank.defined() || bank.dim() != 2)
    throw Error("", "kNN graph: the bank must be a 2-D N×D tensor");
}

// A graph from a CPU search's result, with the search's wall time.
template <class Search>
KnnGraph timed(Search search) {
  const auto t0 = std::chrono::steady_clock::now();
  index::KnnResult nn = search();
  KnnGraph g;
  g.neighbors = nn.indices;
  g.similarities = nn.similarities;
  g.build_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return g;
}

}  // namespace

KnnGraph KnnGraph::build(const at::Tensor& bank, int k, int64_t tile_rows) {
  check_bank(bank);
  if (!bank.device().is_cpu()) {
    if (faiss_gpu_built() && bank.device().is_cuda() && k >= 1 && k < kFaissGpuMaxK)
      return build_faiss_gpu(bank, k);
    return build_tensor_ops(bank, k, tile_rows);
  }
  return timed([&] { return index::knn_inner_product(bank, bank, k, /*exclude_self=*/true, tile_rows); });
}

KnnGraph KnnGraph::build_rows(const at::Tensor& bank, int k, int64_t begin, int64_t end) {
  check_bank(bank);
  if (!bank.device().is_cpu()) {  // a GPU searches the whole bank quickly: take the slice
    auto g = build(bank, k);
    g.neighbors = g.neighbors.slice(0, begin, end).contiguous();
    g.similarities = g.similarities.slice(0, begin, end).contiguous();
    return g;
  }
  if (begin < 0 || end < begin || end > bank.size(0))
    throw Error("", "kNN graph: rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") outside the bank");
  return timed([&] {
    return index::knn_inner_product(bank.slice(0, begin, end), bank, k, /*exclude_self=*/true, 4096, begin);
  });
}

KnnGraph KnnGraph::build_ivf(const at::Tensor& bank, int k, int64_t probes, uint64_t seed) {
  check_bank(bank);
  if (!bank.device().is_cpu()) return build(bank, k);  // exact on the GPU
  index::IvfKnnOptions opt;
  opt.probes = probes;
  opt.seed = seed;
  return timed([&] { return index::knn_self_ivf(bank, k, opt); });
}

KnnGraph KnnGraph::build_tensor_ops(const at::Tensor& bank, int k, int64_t tile_rows) {
  if (!bank.defined() || bank.dim() != 2 || !at::isFloatingType(bank.scalar_type()))
    throw Error("", "kNN graph: the bank must be a 2-D floating-point N×D tensor");
  const int64_t n = bank.size(0);
  if (k < 1 || k > n - 1)
    throw Error("", "kNN graph: need 1 ≤ k ≤ N−1, got k=" + std::to_string(k) + ", N=" +
                        std::to_string(n));
  const auto t0 = std::chrono::steady_clock::now();
  c10::NoGradGuard ng;
  // A tile's similarities (tile × N float32) stay under 1 GiB: 4096 rows up to N = 65,536,
  // 268 rows for a 1M bank.
  tile_rows = std::clamp<int64_t>((int64_t(1) << 28) / n, 1, std::max<int64_t>(1, tile_rows));
  // The graph is exact: full float32 products even when training allows TF32 (a TF32 product
  // is off by ~1e-3 in cosine, enough to reorder near-tied neighbours).
  struct Fp32Products {
    bool was = at::globalContext().allowTF32CuBLAS();
    Fp32Products() { at::globalContext().setAllowTF32CuBLAS(false); }
    ~Fp32Products() { at::globalContext().setAllowTF32CuBLAS(was); }
  } fp32;
  auto idx = at::empty({n, k}, bank.options().dtype(at::kLong));
  auto sim = at::empty({n, k}, bank.options().dtype(at::kFloat));
  for (int64_t r0 = 0; r0 < n; r0 += tile_rows) {
    const int64_t r1 = std::min(n, r0 + tile_rows);
    auto s = at::mm(bank.slice(0, r0, r1), bank.t());  // tile × N, contiguous
    auto rows = at::arange(r1 - r0, s.options().dtype(at::kLong));
    s.view({-1}).index_fill_(0, rows * n + rows + r0, -std::numeric_limits<double>::infinity());
    auto top = at::topk(s, k, 1, /*largest=*/true, /*sorted=*/true);
    sim.slice(0, r0, r1).copy_(std::get<0>(top));
    idx.slice(0, r0, r1).copy_(std::get<1>(top));
  }
  KnnGraph g;
  g.neighbors = idx.to(at::kCPU);
  g.similarities = sim.to(at::kCPU);
  g.build_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return g;
}

bool KnnGraph::faiss_gpu_built() {
#ifdef INVP_WITH_FAISS_GPU
  return true;
#else
  return false;
#endif
}

KnnGraph KnnGraph::build_faiss_gpu(const at::Tensor& bank, int k) {
  if (!bank.defined() || bank.dim() != 2 || !at::isFloatingType(bank.scalar_type()) || !bank.device().is_cuda())
    throw Error("", "kNN graph: FAISS GPU needs a 2-D floating-point N×D tensor on a CUDA device");
  const int64_t n = bank.size(0);
  if (k < 1 || k > n - 1 || k + 1 > kFaissGpuMaxK)
    throw Error("", "kNN graph: FAISS GPU needs 1 ≤ k ≤ N−1 and k < " + std::to_string(kFaissGpuMaxK) +
                        ", got k=" + std::to_string(k) + ", N=" + std::to_string(n));
#ifdef INVP_WITH_FAISS_GPU
  if (n > std::numeric_limits<int>::max()) throw Error("", "kNN graph: FAISS GPU takes at most 2^31−1 rows");
  const auto t0 = std::chrono::steady_clock::now();
  c10::NoGradGuard ng;
  c10::cuda::CUDAGuard on_device(bank.device());
  const int dev = bank.device().index();
  // One resource object (cuBLAS handle, scratch memory) for the process, on LibTorch's current
  // stream so the search is ordered with the bank's updates. Never freed: destroying it after
  // the CUDA runtime has shut down at exit aborts inside FAISS.
  static std::mutex mu;
  static faiss::gpu::StandardGpuResources* res = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (!res) res = new faiss::gpu::StandardGpuResources();
  res->setDefaultStream(dev, at::cuda::getCurrentCUDAStream(dev).stream());
  auto v = bank.to(at::kFloat).contiguous();
  const int kk = k + 1;  // the row itself comes back too
  auto dist = at::empty({n, kk}, v.options());
  auto ids = at::empty({n, kk}, v.options().dtype(at::kLong));
  faiss::gpu::GpuDistanceParams p;
  p.metric = faiss::METRIC_INNER_PRODUCT;
  p.k = kk;
  p.dims = int(v.size(1));
  p.vectors = v.data_ptr<float>();
  p.vectorType = faiss::gpu::DistanceDataType::F32;
  p.vectorsRowMajor = true;
  p.numVectors = int(n);
  p.queries = v.data_ptr<float>();
  p.queryType = faiss::gpu::DistanceDataType::F32;
  p.queriesRowMajor = true;
  p.numQueries = int(n);
  p.outDistances = dist.data_ptr<float>();
  p.outIndicesType = faiss::gpu::IndicesDataType::I64;
  p.outIndices = ids.data_ptr<int64_t>();
  faiss::gpu::bfKnn(res, p);
  // Drop each row's own entry (first, unless an exact twin tied with it); a row whose own
  // entry was crowded out by ties drops its last one. A stable sort moves it to the end.
  auto self = ids.eq(at::arange(n, ids.options()).unsqueeze(1)).to(at::kInt);
  auto order = std::get<1>(at::sort(self, /*stable=*/true, /*dim=*/1, /*descending=*/false)).narrow(1, 0, k);
  KnnGraph g;
  g.neighbors = ids.gather(1, order).to(at::kCPU);
  g.similarities = dist.gather(1, order).to(at::kCPU);
  g.build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return g;
#else
  throw Error("", "kNN graph: this build has no FAISS GPU search (configure with INVP_FAISS_GPU_SOURCE)");
#endif
}

KnnGraph KnnGraph::zeros(int64_t n, int k) {
  if (n < 1 || k < 1)
    throw Error("", "kNN graph: zeros needs n ≥ 1 and k ≥ 1, got n=" + std::to_string(n) +
                        ", k=" + std::to_string(k));
  KnnGraph g;
  g.neighbors = at::zeros({n, k}, at::kLong);
  return g;
}

void KnnGraph::update_rows(const at::Tensor& rows, const at::Tensor& new_neighbors,
                           const at::Tensor& sims) {
  if (!neighbors.defined()) throw Error("", "kNN graph: update_rows on an empty graph");
  const int64_t n = num_nodes(), kk = k();
  if (!rows.defined() || rows.dim() != 1 || rows.scalar_type() != at::kLong)
    throw Error("", "kNN graph: update rows must be a 1-D int64 tensor");
  if (!new_neighbors.defined() || new_neighbors.dim() != 2 ||
      new_neighbors.size(0) != rows.size(0) || new_neighbors.size(1) != kk ||
      new_neighbors.scalar_type() != at::kLong)
    throw Error("", "kNN graph: update neighbours must be int64 of shape " +
                        std::to_string(rows.size(0)) + "×" + std::to_string(kk));
  check_ids(rows, n, "update rows");
  check_ids(new_neighbors, n, "update neighbours");
  neighbors.index_copy_(0, rows.to(at::kCPU), new_neighbors.to(at::kCPU));
  if (similarities.defined() && sims.defined()) {
    if (sims.sizes() != new_neighbors.sizes())
      throw Error("", "kNN graph: update similarities must match the neighbours' shape");
    similarities.index_copy_(0, rows.to(at::kCPU), sims.to(at::kCPU, at::kFloat));
  } else {
    similarities = at::Tensor();  // stale for the updated rows: better unknown than wrong
  }
}

GraphStats KnnGraph::stats(const at::Tensor& labels) const {
  GraphStats s;
  s.build_seconds = build_seconds;
  if (!neighbors.defined() || neighbors.numel() == 0) {
    s.mean_similarity = std::numeric_limits<double>::quiet_NaN();
    return s;
  }
  const int64_t n = num_nodes(), kk = k();
  s.mean_similarity = similarities.defined() ? similarities.to(at::kDouble).mean().item<double>()
                                             : std::numeric_limits<double>::quiet_NaN();
  auto nb_t = neighbors.to(at::kCPU).contiguous();
  check_ids(nb_t, n, "neighbours");
  const int64_t* nb = nb_t.data_ptr<int64_t>();
  // Scan j's row for i: O(k) per edge, no N×k×k intermediate (k can be 200 for monitors).
  int64_t mutual = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t a = 0; a < kk; ++a) {
      const int64_t* row = nb + nb[i * kk + a] * kk;
      for (int64_t b = 0; b < kk; ++b)
        if (row[b] == i) { ++mutual; break; }
    }
  s.mutual_share = double(mutual) / double(n * kk);

  if (labels.defined()) {
    if (labels.dim() != 1 || labels.size(0) != n)
      throw Error("", "kNN graph stats: labels must have " + std::to_string(n) +
                          " entries, got shape " + std::to_string(labels.numel()));
    auto lab_t = labels.to(at::kCPU, at::kLong).contiguous();
    const int64_t* lab = lab_t.data_ptr<int64_t>();
    int64_t same = 0, known = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (lab[i] < 0) continue;
      for (int64_t a = 0; a < kk; ++a) {
        const int64_t lj = lab[nb[i * kk + a]];
        if (lj < 0) continue;
        ++known;
        same += lj == lab[i];
      }
    }
    if (known > 0) s.same_label_share = double(same) / double(known);
  }
  return s;
}

}  // namespace invp::graph
