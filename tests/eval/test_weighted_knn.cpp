#include <invp/eval/weighted_knn.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <vector>

// Brute-force oracle: plain loops over doubles, full sort per query.
static double oracle_top1(const torch::Tensor& tr, const torch::Tensor& trl, const torch::Tensor& te,
                          const torch::Tensor& tel, int k, double sigma) {
  auto a = tr.accessor<float, 2>();
  auto b = te.accessor<float, 2>();
  int hits = 0;
  for (int64_t q = 0; q < te.size(0); ++q) {
    std::vector<std::pair<double, int64_t>> s;
    for (int64_t i = 0; i < tr.size(0); ++i) {
      double d = 0;
      for (int64_t j = 0; j < tr.size(1); ++j) d += double(a[i][j]) * b[q][j];
      s.push_back({d, i});
    }
    std::sort(s.begin(), s.end(), [](auto& x, auto& y) { return x.first > y.first; });
    std::map<int64_t, double> votes;
    for (int r = 0; r < k; ++r) votes[trl[s[r].second].item<int64_t>()] += std::exp(s[r].first / sigma);
    int64_t best = -1;
    double bw = -1;
    for (auto& [l, w] : votes)
      if (w > bw) bw = w, best = l;
    hits += best == tel[q].item<int64_t>();
  }
  return double(hits) / double(te.size(0));
}

TEST(WeightedKnn, MatchesBruteForceOracle) {
  torch::manual_seed(3);
  int64_t n = 300, d = 8, c = 4;
  auto centers = torch::randn({c, d});
  auto trl = torch::randint(0, c, {n}, torch::kLong);
  auto tel = torch::randint(0, c, {80}, torch::kLong);
  auto tr = torch::nn::functional::normalize(centers.index_select(0, trl) + 0.9 * torch::randn({n, d}),
                                             torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto te = torch::nn::functional::normalize(centers.index_select(0, tel) + 0.9 * torch::randn({80, d}),
                                             torch::nn::functional::NormalizeFuncOptions().dim(1));
  for (int k : {1, 10, 50}) {
    auto acc = invp::eval::weighted_knn(tr, trl, te, tel, k, 0.07);
    EXPECT_NEAR(acc.top1, oracle_top1(tr, trl, te, tel, k, 0.07), 1e-9) << "k=" << k;
    EXPECT_GE(acc.top5, acc.top1);
    EXPECT_EQ(acc.evaluated, 80);
  }
  // Clustered data: well above chance (25 %).
  EXPECT_GT(invp::eval::weighted_knn(tr, trl, te, tel).top1, 0.5);
}

TEST(WeightedKnn, VotesWeightedByExpSimilarity) {
  auto idx = torch::tensor({{0, 1, 2}}, torch::kLong);
  auto sim = torch::tensor({{0.5f, 0.4f, 0.3f}});
  auto labels = torch::tensor({1, 0, 0}, torch::kLong);
  auto v = invp::eval::knn_votes(idx, sim, labels, 2, 0.1);
  EXPECT_NEAR(v[0][1].item<double>(), std::exp(5.0), 1e-3);
  EXPECT_NEAR(v[0][0].item<double>(), std::exp(4.0) + std::exp(3.0), 1e-3);
}
