// knn_self_ivf against a brute-force oracle: every returned edge is real (valid id, not self,
// distinct, similarity = the true inner product, rows sorted), and on clustered data most of
// the true k nearest are found.
#include <invp/core/error.h>
#include <invp/index/ivf_knn.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <set>

using invp::index::IvfKnnOptions;
using invp::index::knn_self_ivf;

namespace {

// `blobs` Gaussian clusters on the unit sphere (spread σ around random centres), shuffled.
at::Tensor clustered(int64_t n, int64_t d, int64_t blobs, double spread, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto centres = at::randn({blobs, d}, gen, at::kFloat);
  auto which = at::randint(blobs, {n}, gen, at::kLong);
  auto x = centres.index_select(0, which) + spread * at::randn({n, d}, gen, at::kFloat);
  return (x / x.norm(2, {1}, true)).contiguous();
}

// Checks every edge against the double-precision inner products; returns recall@k against
// the exact k nearest other rows (ties at the k-th similarity count as found).
double check_and_recall(const invp::index::KnnResult& r, const at::Tensor& x, int k) {
  const int64_t n = x.size(0);
  EXPECT_EQ(r.indices.sizes(), (at::IntArrayRef{n, k}));
  EXPECT_EQ(r.similarities.sizes(), (at::IntArrayRef{n, k}));
  auto full = at::mm(x.to(at::kDouble), x.to(at::kDouble).t());
  full.fill_diagonal_(-10.0);
  auto kth = std::get<0>(at::topk(full, k, 1)).select(1, k - 1).contiguous();
  auto fa = full.accessor<double, 2>();
  auto ka = kth.accessor<double, 1>();
  auto ia = r.indices.accessor<int64_t, 2>();
  auto sa = r.similarities.accessor<float, 2>();
  int64_t found = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::set<int64_t> seen;
    for (int c = 0; c < k; ++c) {
      const int64_t id = ia[i][c];
      EXPECT_GE(id, 0);
      EXPECT_LT(id, n);
      if (id < 0 || id >= n) return 0;
      EXPECT_NE(id, i) << "self in row " << i;
      EXPECT_TRUE(seen.insert(id).second) << "duplicate in row " << i;
      EXPECT_NEAR(sa[i][c], fa[i][id], 1e-4) << "row " << i << " col " << c;
      if (c > 0) {
        EXPECT_GE(sa[i][c - 1], sa[i][c]) << "row " << i << " not sorted";
      }
      found += fa[i][id] >= ka[i] - 1e-6;
    }
  }
  return double(found) / double(n * k);
}

double recall_with_cells(const at::Tensor& x, int k, int64_t lists, int64_t probes) {
  IvfKnnOptions opt;
  opt.lists = lists;
  opt.probes = probes;
  return check_and_recall(knn_self_ivf(x, k, opt), x, k);
}

}  // namespace

TEST(IvfKnn, FindsMostTrueNeighboursOnClusteredData) {
  auto x = clustered(4000, 32, 40, 0.15, 7);
  IvfKnnOptions opt;  // lists = round(sqrt(4000)) = 63, probes 8
  const double recall = check_and_recall(knn_self_ivf(x, 4, opt), x, 4);
  EXPECT_GE(recall, 0.97);
  opt.probes = 1;  // one cell only: still valid edges, fewer of the true ones
  const double recall1 = check_and_recall(knn_self_ivf(x, 4, opt), x, 4);
  EXPECT_LT(recall1, recall);
  EXPECT_GT(recall1, 0.5);
}

TEST(IvfKnn, AllCellsProbedIsTheExactGraph) {
  auto x = clustered(500, 16, 5, 0.3, 3);
  EXPECT_DOUBLE_EQ(recall_with_cells(x, 5, /*lists=*/10, /*probes=*/10), 1.0);
}

TEST(IvfKnn, RowsWithTooFewCandidatesAreCompletedExactly) {
  // 10 cells of ~8 rows and k = 12: a single probed cell can never supply 12 neighbours.
  auto x = clustered(80, 8, 10, 0.05, 5);
  EXPECT_DOUBLE_EQ(recall_with_cells(x, 12, /*lists=*/10, /*probes=*/1), 1.0);
}

TEST(IvfKnn, DeterministicForTheSameInputAndSeed) {
  auto x = clustered(3000, 16, 30, 0.2, 11);
  auto a = knn_self_ivf(x, 4), b = knn_self_ivf(x, 4);
  EXPECT_TRUE(at::equal(a.indices, b.indices));
  EXPECT_TRUE(at::equal(a.similarities, b.similarities));
}

TEST(IvfKnn, RejectsBadArguments) {
  auto x = clustered(100, 8, 4, 0.2, 1);
  EXPECT_THROW(knn_self_ivf(x, 100), invp::Error);  // k must be ≤ N−1
  EXPECT_THROW(knn_self_ivf(x, 0), invp::Error);
  IvfKnnOptions bad;
  bad.probes = 0;
  EXPECT_THROW(knn_self_ivf(x, 4, bad), invp::Error);
  EXPECT_THROW(knn_self_ivf(x.to(at::kDouble), 4), invp::Error);
}
