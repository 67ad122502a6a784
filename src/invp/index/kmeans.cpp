// Spherical k-means through FAISS Clustering, seeded with k-means++ (FAISS 1.7.3 only
// seeds randomly, which splits well-separated blobs whenever two seeds land in one).
#include <invp/core/error.h>
#include <invp/index/ann_detail.h>
#include <invp/index/ann_index.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>

#include <algorithm>

namespace invp::index {
namespace {

// k-means++ on at most kSeedRows rows: each next seed is drawn with probability
// proportional to its squared distance (2 − 2·cos on the unit sphere) to the nearest seed.
at::Tensor kmeanspp_seeds(const at::Tensor& x, int k, uint64_t seed) {
  constexpr int64_t kSeedRows = 20000;
  auto gen = at::detail::createCPUGenerator(seed);
  at::Tensor rows = x;
  const int64_t cap = std::max<int64_t>(kSeedRows, 4 * int64_t(k));
  if (x.size(0) > cap) rows = x.index_select(0, at::randperm(x.size(0), gen, at::kLong).slice(0, 0, cap));
  const int64_t n = rows.size(0);
  auto seeds = at::empty({int64_t(k), x.size(1)}, at::kFloat);
  int64_t pick = at::randint(n, {1}, gen, at::kLong).item<int64_t>();
  at::Tensor dist = at::full({n}, 4.0f, at::kFloat);  // max squared distance on the sphere
  for (int c = 0; c < k; ++c) {
    seeds[c].copy_(rows[pick]);
    dist = at::minimum(dist, (2 - 2 * at::mv(rows, rows[pick])).clamp_min(0));
    if (c + 1 == k) break;
    const double total = dist.sum().item<double>();
    pick = total > 0 ? at::multinomial(dist, 1, false, gen).item<int64_t>()
                     : at::randint(n, {1}, gen, at::kLong).item<int64_t>();  // all duplicates
  }
  return seeds.contiguous();
}

}  // namespace

KMeansResult kmeans(const at::Tensor& x, int k, int iterations, uint64_t seed) {
  detail::check_matrix(x, -1, "k-means input");
  const int64_t n = x.size(0), d = x.size(1);
  if (d < 1) throw Error("", "k-means input has no columns");
  if (k < 1 || k > n)
    throw Error("", "k-means: k=" + std::to_string(k) + " outside [1, " + std::to_string(n) + "]",
                "ask for at most one cluster per row");
  if (iterations < 1) throw Error("", "k-means: iterations must be ≥ 1");
  faiss::ClusteringParameters cp;
  cp.niter = iterations;
  cp.spherical = true;
  cp.seed = int(seed & 0x7fffffff);
  cp.min_points_per_centroid = 1;  // the caller chose k; FAISS's warning would only be noise
  faiss::Clustering clus(int(d), k, cp);
  const at::Tensor init = kmeanspp_seeds(x, k, seed);
  clus.centroids.assign(init.data_ptr<float>(), init.data_ptr<float>() + k * d);  // used as the start
  faiss::IndexFlatIP centroids_index(d);
  at::Tensor assignments = at::empty({n}, at::kLong);
  at::Tensor sims = at::empty({n}, at::kFloat);
  try {
    clus.train(n, x.data_ptr<float>(), centroids_index);
    // train() leaves exactly the final centroids in the index.
    centroids_index.search(n, x.data_ptr<float>(), 1, sims.data_ptr<float>(), assignments.data_ptr<int64_t>());
  } catch (const std::exception& e) {
    throw Error("", std::string("k-means failed: ") + e.what());
  }
  at::Tensor centroids = at::empty({int64_t(k), d}, at::kFloat);
  std::copy(clus.centroids.begin(), clus.centroids.end(), centroids.data_ptr<float>());
  return {centroids, assignments};
}

}  // namespace invp::index
