#include <invp/core/error.h>
#include <invp/index/exact_knn.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

using invp::index::knn_inner_product;

namespace {

at::Tensor normalised(int64_t n, int64_t d, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto x = at::randn({n, d}, gen, at::kFloat);
  return (x / x.norm(2, {1}, true)).contiguous();
}

// Oracle: at::mm in double, then a full sort of each row (descending, ties by id).
std::vector<std::vector<std::pair<double, int64_t>>> oracle(const at::Tensor& q,
                                                             const at::Tensor& base) {
  auto s = at::mm(q.to(at::kDouble), base.to(at::kDouble).t()).contiguous();
  auto a = s.accessor<double, 2>();
  std::vector<std::vector<std::pair<double, int64_t>>> out(size_t(q.size(0)));
  for (int64_t i = 0; i < q.size(0); ++i) {
    for (int64_t j = 0; j < base.size(0); ++j) out[size_t(i)].push_back({a[i][j], j});
    std::sort(out[size_t(i)].begin(), out[size_t(i)].end(),
              [](auto x, auto y) { return x.first != y.first ? x.first > y.first : x.second < y.second; });
  }
  return out;
}

// Compares by similarity (robust to near-ties in float vs double) and checks that every
// returned id really has the returned similarity, ids are distinct, and self is absent.
void expect_matches(const invp::index::KnnResult& r, const at::Tensor& q, const at::Tensor& base,
                    int k, bool exclude_self) {
  ASSERT_EQ(r.indices.sizes(), (at::IntArrayRef{q.size(0), k}));
  ASSERT_EQ(r.similarities.sizes(), (at::IntArrayRef{q.size(0), k}));
  ASSERT_EQ(r.indices.scalar_type(), at::kLong);
  auto full = at::mm(q.to(at::kDouble), base.to(at::kDouble).t());
  auto fa = full.accessor<double, 2>();
  auto ora = oracle(q, base);
  auto ia = r.indices.accessor<int64_t, 2>();
  auto sa = r.similarities.accessor<float, 2>();
  for (int64_t i = 0; i < q.size(0); ++i) {
    std::vector<double> want;
    for (auto& p : ora[size_t(i)])
      if (!(exclude_self && p.second == i)) want.push_back(p.first);
    std::set<int64_t> seen;
    for (int c = 0; c < k; ++c) {
      const int64_t id = ia[i][c];
      ASSERT_GE(id, 0);
      ASSERT_LT(id, base.size(0));
      EXPECT_TRUE(seen.insert(id).second) << "duplicate id in row " << i;
      if (exclude_self) {
        EXPECT_NE(id, i);
      }
      EXPECT_NEAR(sa[i][c], want[size_t(c)], 1e-4) << "row " << i << " col " << c;
      EXPECT_NEAR(sa[i][c], fa[i][id], 1e-4);
      if (c > 0) {
        EXPECT_GE(sa[i][c - 1], sa[i][c]);
      }
    }
  }
}

}  // namespace

TEST(ExactKnn, MatchesOracleWithSmallTiles) {
  auto base = normalised(300, 16, 1);
  auto q = normalised(57, 16, 2);
  for (int64_t tile : {int64_t(1), int64_t(7), int64_t(56), int64_t(57), int64_t(4096)}) {
    auto r = knn_inner_product(q, base, 10, false, tile);
    expect_matches(r, q, base, 10, false);
  }
}

TEST(ExactKnn, ExcludeSelfMatchesOracle) {
  auto base = normalised(200, 8, 3);
  auto q = base.narrow(0, 0, 90).contiguous();
  for (int64_t tile : {int64_t(13), int64_t(4096)}) {
    auto r = knn_inner_product(q, base, 5, true, tile);
    expect_matches(r, q, base, 5, true);
    // Self excluded, the best neighbour is the oracle's second entry (the first is self).
    auto ora = oracle(q, base);
    for (int64_t i = 0; i < q.size(0); ++i) EXPECT_EQ(ora[size_t(i)][0].second, i);
  }
}

TEST(ExactKnn, KEdgeCases) {
  auto base = normalised(12, 4, 4);
  auto all = knn_inner_product(base, base, 12, false);  // k = N
  expect_matches(all, base, base, 12, false);
  auto all_others = knn_inner_product(base, base, 11, true);  // k = N-1, self excluded
  expect_matches(all_others, base, base, 11, true);
  auto one = knn_inner_product(base, base, 1, true);
  expect_matches(one, base, base, 1, true);
  // Without exclusion a normalised row's own id comes first.
  auto self = knn_inner_product(base, base, 1, false);
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(self.indices[i][0].item<int64_t>(), i);
  // Zero queries give an empty 0×k result.
  auto none = knn_inner_product(base.narrow(0, 0, 0).contiguous(), base, 3, false);
  EXPECT_EQ(none.indices.sizes(), (at::IntArrayRef{0, 3}));
}

TEST(ExactKnn, ExcludeSelfUnderTiesDropsTheLast) {
  // Rows 0..3 identical: self may be pushed out of the k+1 results by equal-similarity ties.
  auto row = normalised(1, 6, 5);
  auto base = at::cat({row.expand({4, 6}), normalised(6, 6, 6)}, 0).contiguous();
  for (int k : {1, 2, 3}) {
    auto r = knn_inner_product(base, base, k, true, 2);
    for (int64_t i = 0; i < 4; ++i)
      for (int c = 0; c < k; ++c) {
        const int64_t id = r.indices[i][c].item<int64_t>();
        EXPECT_NE(id, i);
        EXPECT_LT(id, 4) << "an identical row must come first";
        EXPECT_NEAR(r.similarities[i][c].item<float>(), 1.0f, 1e-5);
      }
  }
}

TEST(ExactKnn, InvalidInputsThrow) {
  auto base = normalised(10, 4, 7);
  auto q = normalised(3, 4, 8);
  EXPECT_THROW(knn_inner_product(q, base, 0, false), invp::Error);
  EXPECT_THROW(knn_inner_product(q, base, 11, false), invp::Error);
  EXPECT_THROW(knn_inner_product(base, base, 10, true), invp::Error);  // k > N-1
  EXPECT_THROW(knn_inner_product(normalised(3, 5, 9), base, 2, false), invp::Error);
  EXPECT_THROW(knn_inner_product(q.to(at::kDouble), base, 2, false), invp::Error);
  EXPECT_THROW(knn_inner_product(q.flatten(), base, 2, false), invp::Error);
  EXPECT_THROW(knn_inner_product(base.t(), base.t().contiguous(), 2, false), invp::Error);
  EXPECT_THROW(knn_inner_product(q, base, 2, false, 0), invp::Error);
  EXPECT_THROW(knn_inner_product(at::Tensor(), base, 2, false), invp::Error);
  EXPECT_THROW(knn_inner_product(normalised(11, 4, 1), base, 2, true), invp::Error);  // Q > N
}
