// Memory bank, losses and schedules of the train stage. Loss values are checked against an
// independent double-precision implementation written with plain loops (ref_loss below).
#include <invp/core/error.h>
#include <invp/train/invariance_loss.h>
#include <invp/train/memory_bank.h>
#include <invp/train/schedule.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

using namespace invp::train;

namespace {

using Mat = std::vector<std::vector<double>>;

struct Ref {
  double instance = 0, invariance = 0;
};

// Plain-loop reference of docs/ALGORITHM.md, "The losses, exactly" (no shift, no tensors).
Ref ref_loss(const Mat& z, const Mat& bank, const std::vector<int64_t>& anchors,
             const std::vector<std::vector<int64_t>>& prop, int64_t M, int64_t P, double tau,
             bool paper) {
  const size_t B = z.size(), N = bank.size();
  tau = static_cast<double>(static_cast<float>(tau));  // LossConfig::tau is a float
  M = std::min<int64_t>(M, static_cast<int64_t>(N));
  Ref r;
  for (size_t i = 0; i < B; ++i) {
    std::vector<double> e(N);
    for (size_t j = 0; j < N; ++j) {
      double dot = 0;
      for (size_t d = 0; d < z[i].size(); ++d) dot += z[i][d] * bank[j][d];
      e[j] = std::exp(dot / tau);
    }
    std::vector<size_t> order(N);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return e[a] > e[b]; });
    double S = 0;
    for (int64_t k = 0; k < M; ++k) S += e[order[k]];
    const double ea = e[anchors[i]];
    r.instance += -std::log(ea / S + 1e-7);

    std::vector<int64_t> members;
    for (int64_t v : prop[i])
      if (v >= 0) members.push_back(v);
    if (members.empty()) continue;  // contributes 0
    std::sort(members.begin(), members.end(),
              [&](int64_t a, int64_t b) { return e[a] < e[b]; });
    const size_t p = std::min<size_t>(static_cast<size_t>(P), members.size());
    double hsum = 0;
    for (size_t k = 0; k < p; ++k) hsum += e[members[k]];
    double denom = 0;
    if (!paper) {
      denom = S - ea;
    } else {
      std::set<int64_t> nset(members.begin(), members.end());
      for (int64_t k = 0; k < M; ++k)
        if (!nset.count(static_cast<int64_t>(order[k]))) denom += e[order[k]];
      denom += hsum;
    }
    r.invariance += -std::log(hsum / denom + 1e-7);
  }
  r.instance /= B;
  r.invariance /= B;
  return r;
}

Mat normalised(Mat m) {
  for (auto& row : m) {
    double n = 0;
    for (double x : row) n += x * x;
    n = std::sqrt(n);
    for (double& x : row) x /= n;
  }
  return m;
}

torch::Tensor to_tensor(const Mat& m, torch::Dtype dt = torch::kFloat64) {
  auto t = torch::empty({static_cast<int64_t>(m.size()), static_cast<int64_t>(m[0].size())},
                        torch::kFloat64);
  for (size_t i = 0; i < m.size(); ++i)
    for (size_t j = 0; j < m[i].size(); ++j) t[i][j] = m[i][j];
  return t.to(dt);
}

torch::Tensor to_index(const std::vector<std::vector<int64_t>>& p) {
  auto t = torch::empty({static_cast<int64_t>(p.size()), static_cast<int64_t>(p[0].size())},
                        torch::kLong);
  for (size_t i = 0; i < p.size(); ++i)
    for (size_t j = 0; j < p[i].size(); ++j) t[i][j] = p[i][j];
  return t;
}

// Tiny fixture: N = 6, D = 3, B = 2, distinct similarities (no ties).
const Mat kBank = normalised({{1.0, 0.2, 0.1},
                              {0.3, 1.0, -0.2},
                              {-0.5, 0.4, 1.0},
                              {0.9, -0.6, 0.3},
                              {-1.0, -0.3, 0.2},
                              {0.2, 0.7, 0.7}});
const Mat kZ = normalised({{0.8, 0.3, 0.2}, {0.1, 0.9, 0.4}});
const std::vector<int64_t> kAnchors = {0, 1};
const std::vector<std::vector<int64_t>> kProp = {{3, 5, 2, -1}, {5, 2, 4, 0}};

double val(const torch::Tensor& t) { return t.item<double>(); }

LossResult run(const Mat& z, const std::vector<std::vector<int64_t>>& prop, LossConfig cfg,
               double w = 1.0, torch::Dtype dt = torch::kFloat64) {
  auto zt = to_tensor(z, dt);
  return invariance_loss(zt, to_tensor(kBank, dt), torch::tensor({kAnchors[0], kAnchors[1]}),
                         to_index(prop), w, cfg);
}

LossConfig small_cfg(Denominator d) {
  LossConfig c;
  c.tau = 0.2f;
  c.background = 4;
  c.hard_positives = 2;
  c.denominator = d;
  return c;
}

}  // namespace

TEST(MemoryBank, InitRangeAndDeterminism) {
  const int64_t dim = 12;
  MemoryBank a(500, dim, 7), b(500, dim, 7), c(500, dim, 8);
  const double s = 1.0 / std::sqrt(dim / 3.0);
  EXPECT_EQ(a.data().sizes(), (std::vector<int64_t>{500, dim}));
  EXPECT_LE(val(a.data().abs().max()), s);
  EXPECT_GT(val(a.data().max()), 0.95 * s);
  EXPECT_LT(val(a.data().min()), -0.95 * s);
  EXPECT_NEAR(val(a.data().mean()), 0.0, 0.02);
  EXPECT_TRUE(torch::equal(a.data(), b.data()));
  EXPECT_FALSE(torch::equal(a.data(), c.data()));
  // Not normalised: row norms vary.
  auto norms = a.data().norm(2, 1);
  EXPECT_GT(val(norms.max() - norms.min()), 0.1);
}

TEST(MemoryBank, UpdateHandComputed) {
  MemoryBank bank(3, 2, 1);
  bank.data().copy_(torch::tensor({{1.0f, 0.0f}, {0.0f, 2.0f}, {3.0f, 4.0f}}));
  auto feats = torch::tensor({{0.0f, 1.0f}, {0.6f, 0.8f}});
  bank.update(torch::tensor({0L, 2L}), feats, 0.5f);
  // row 0: 0.5*(1,0)+0.5*(0,1) = (0.5,0.5) -> (1/sqrt2, 1/sqrt2)
  // row 2: 0.5*(3,4)+0.5*(0.6,0.8) = (1.8,2.4) -> (0.6,0.8)
  const float r = 1.0f / std::sqrt(2.0f);
  EXPECT_NEAR(val(bank.data()[0][0]), r, 1e-6);
  EXPECT_NEAR(val(bank.data()[0][1]), r, 1e-6);
  EXPECT_NEAR(val(bank.data()[1][0]), 0.0, 1e-7);  // untouched
  EXPECT_NEAR(val(bank.data()[1][1]), 2.0, 1e-7);
  EXPECT_NEAR(val(bank.data()[2][0]), 0.6, 1e-6);
  EXPECT_NEAR(val(bank.data()[2][1]), 0.8, 1e-6);
  // momentum 0.9 on row 1: 0.9*(0,2)+0.1*(1,0) = (0.1,1.8)
  bank.update(torch::tensor({1L}), torch::tensor({{1.0f, 0.0f}}), 0.9f);
  const double n = std::sqrt(0.01 + 3.24);
  EXPECT_NEAR(val(bank.data()[1][0]), 0.1 / n, 1e-6);
  EXPECT_NEAR(val(bank.data()[1][1]), 1.8 / n, 1e-6);
  EXPECT_THROW(bank.update(torch::tensor({0L}), torch::zeros({1, 3})), invp::Error);
}

TEST(InvarianceLoss, ReferenceDenominatorMatchesLoops) {
  auto cfg = small_cfg(Denominator::Reference);
  auto r = run(kZ, kProp, cfg, 0.6);
  auto e = ref_loss(kZ, kBank, kAnchors, kProp, 4, 2, 0.2, false);
  EXPECT_NEAR(val(r.instance), e.instance, 1e-9);
  EXPECT_NEAR(val(r.invariance), e.invariance, 1e-9);
  EXPECT_NEAR(val(r.total), e.instance + 0.6 * e.invariance, 1e-9);
  EXPECT_EQ(r.total.dim(), 0);
}

TEST(InvarianceLoss, PaperDenominatorMatchesLoops) {
  auto cfg = small_cfg(Denominator::Paper);
  auto r = run(kZ, kProp, cfg, 0.6);
  auto e = ref_loss(kZ, kBank, kAnchors, kProp, 4, 2, 0.2, true);
  auto ref = ref_loss(kZ, kBank, kAnchors, kProp, 4, 2, 0.2, false);
  EXPECT_NEAR(val(r.instance), e.instance, 1e-9);
  EXPECT_NEAR(val(r.invariance), e.invariance, 1e-9);
  EXPECT_GT(std::abs(e.invariance - ref.invariance), 1e-3);  // the variants really differ
}

// The reference's exclusive=0 denominator and its not_hardpos selection, against values worked
// out by hand. z = (1, 0), τ = 0.5, bank rows at cosines 1, ½, 0, −½, −1 to z: logits 2, 1, 0,
// −1, −2, so e = e², e, 1, 1/e, 1/e². Anchor 0, M = 4 (rows 0-3), N(i) = {1, 2, 3}, P = 2.
//   S = e² + e + 1 + 1/e;  L_ins = −log(e²/S + ε)
//   hardest H = {2, 3}: 1 + 1/e;  easiest H = {1, 2}: e + 1
//   reference denominator S − e²;  plain S;  paper (B_M \ N) + H = e² + H.
TEST(InvarianceLoss, PlainDenominatorAndEasiestPositivesHandComputed) {
  const double E = std::exp(1.0), eps = 1e-7, h = std::sqrt(0.75);
  const Mat bank = {{1, 0}, {0.5, h}, {0, 1}, {-0.5, h}, {-1, 0}};
  auto zt = torch::tensor({{1.0, 0.0}}, torch::kFloat64);
  auto bt = to_tensor(bank);
  auto anchors = torch::tensor({0L});
  auto prop = torch::tensor({{1L, 2L, 3L, -1L}});
  const double S = E * E + E + 1 + 1 / E, hard = 1 + 1 / E, easy = E + 1;
  struct Case { Denominator d; bool easiest; double want; };
  for (auto c : {Case{Denominator::Reference, false, -std::log(hard / (S - E * E) + eps)},
                 Case{Denominator::Plain, false, -std::log(hard / S + eps)},
                 Case{Denominator::Reference, true, -std::log(easy / (S - E * E) + eps)},
                 Case{Denominator::Plain, true, -std::log(easy / S + eps)},
                 Case{Denominator::Paper, true, -std::log(easy / (E * E + easy) + eps)}}) {
    LossConfig cfg;
    cfg.tau = 0.5f;
    cfg.background = 4;
    cfg.hard_positives = 2;
    cfg.denominator = c.d;
    cfg.easiest_positives = c.easiest;
    for (bool kernel : {true, false}) {
      auto r = kernel ? invariance_loss(zt, bt, anchors, prop, 1.0, cfg)
                      : invariance_loss_tensor_ops(zt, bt, anchors, prop, 1.0, cfg);
      EXPECT_NEAR(val(r.instance), -std::log(E * E / S + eps), 1e-12);
      EXPECT_NEAR(val(r.invariance), c.want, 1e-12) << int(c.d) << " easiest " << c.easiest << " kernel " << kernel;
    }
  }
}

TEST(InvarianceLoss, Float32MatchesLoops) {
  for (auto d : {Denominator::Reference, Denominator::Paper}) {
    auto r = run(kZ, kProp, small_cfg(d), 1.0, torch::kFloat32);
    auto e = ref_loss(kZ, kBank, kAnchors, kProp, 4, 2, 0.2, d == Denominator::Paper);
    EXPECT_NEAR(val(r.instance), e.instance, 1e-5);
    EXPECT_NEAR(val(r.invariance), e.invariance, 1e-5);
  }
}

TEST(InvarianceLoss, BackgroundCappedAtN) {
  for (auto d : {Denominator::Reference, Denominator::Paper}) {
    auto cfg = small_cfg(d);
    cfg.background = 100;
    auto big = run(kZ, kProp, cfg);
    cfg.background = 6;
    auto exact = run(kZ, kProp, cfg);
    auto e = ref_loss(kZ, kBank, kAnchors, kProp, 6, 2, 0.2, d == Denominator::Paper);
    EXPECT_NEAR(val(big.instance), e.instance, 1e-9);
    EXPECT_NEAR(val(big.invariance), e.invariance, 1e-9);
    EXPECT_NEAR(val(big.total), val(exact.total), 1e-12);
  }
}

TEST(InvarianceLoss, HardPositivesCappedByValidMembers) {
  // Row 0 has one valid member, row 1 two; P = 20 must use exactly those.
  const std::vector<std::vector<int64_t>> prop = {{-1, 4, -1}, {2, -1, 3}};
  for (auto d : {Denominator::Reference, Denominator::Paper}) {
    auto cfg = small_cfg(d);
    cfg.hard_positives = 20;
    auto r = run(kZ, prop, cfg);
    auto e = ref_loss(kZ, kBank, kAnchors, prop, 4, 20, 0.2, d == Denominator::Paper);
    EXPECT_NEAR(val(r.invariance), e.invariance, 1e-9);
    cfg.hard_positives = 2;
    EXPECT_NEAR(val(run(kZ, prop, cfg).invariance), e.invariance, 1e-12);
  }
}

TEST(InvarianceLoss, ConcatDuplicatesCounted) {
  // Row 0 lists bank row 4 three times (and the anchor itself, as concat mode may).
  const std::vector<std::vector<int64_t>> dup = {{4, 4, 0, 4}, {5, 2, 2, -1}};
  const std::vector<std::vector<int64_t>> dedup = {{4, 0, -1, -1}, {5, 2, -1, -1}};
  for (auto d : {Denominator::Reference, Denominator::Paper}) {
    const bool paper = d == Denominator::Paper;
    auto cfg = small_cfg(d);
    cfg.hard_positives = 3;
    auto r = run(kZ, dup, cfg);
    auto e = ref_loss(kZ, kBank, kAnchors, dup, 4, 3, 0.2, paper);
    auto e_dedup = ref_loss(kZ, kBank, kAnchors, dedup, 4, 3, 0.2, paper);
    EXPECT_NEAR(val(r.invariance), e.invariance, 1e-9);
    EXPECT_GT(std::abs(e.invariance - e_dedup.invariance), 1e-3);
  }
  // Hand check, reference denominator, row 0 alone: H = {4, 4, 4} (row 4 is the farthest).
  auto cfg = small_cfg(Denominator::Reference);
  cfg.hard_positives = 3;
  auto zt = to_tensor({kZ[0]});
  auto r = invariance_loss(zt, to_tensor(kBank), torch::tensor({0L}), to_index({dup[0]}), 1.0,
                           cfg);
  std::vector<double> e(6);
  for (int j = 0; j < 6; ++j) {
    double dot = 0;
    for (int k = 0; k < 3; ++k) dot += kZ[0][k] * kBank[j][k];
    e[j] = std::exp(dot / static_cast<double>(0.2f));
  }
  std::vector<double> sorted = e;
  std::sort(sorted.rbegin(), sorted.rend());
  const double S = sorted[0] + sorted[1] + sorted[2] + sorted[3];
  EXPECT_NEAR(val(r.invariance), -std::log(3 * e[4] / (S - e[0]) + 1e-7), 1e-9);
}

TEST(InvarianceLoss, EmptyPropagatedSetContributesZero) {
  const std::vector<std::vector<int64_t>> prop = {{-1, -1, -1}, {5, 2, 3}};
  for (auto d : {Denominator::Reference, Denominator::Paper}) {
    auto cfg = small_cfg(d);
    auto r = run(kZ, prop, cfg);
    auto e = ref_loss(kZ, kBank, kAnchors, prop, 4, 2, 0.2, d == Denominator::Paper);
    // Row 1 alone, then halved: the empty row is 0 but counts in the mean.
    auto one = invariance_loss(to_tensor({kZ[1]}), to_tensor(kBank), torch::tensor({1L}),
                               to_index({prop[1]}), 1.0, cfg);
    EXPECT_NEAR(val(r.invariance), e.invariance, 1e-9);
    EXPECT_NEAR(val(r.invariance), 0.5 * val(one.invariance), 1e-9);
    EXPECT_TRUE(std::isfinite(val(r.total)));
  }
  // All rows empty: invariance exactly 0 and gradients finite.
  auto z = to_tensor(kZ).requires_grad_(true);
  auto r = invariance_loss(z, to_tensor(kBank), torch::tensor({0L, 1L}),
                           torch::full({2, 3}, -1L), 1.0, small_cfg(Denominator::Reference));
  EXPECT_EQ(val(r.invariance), 0.0);
  r.total.backward();
  EXPECT_TRUE(torch::isfinite(z.grad()).all().item<bool>());
}

TEST(InvarianceLoss, GradientIntoZOnlyAndFiniteDifference) {
  for (auto d : {Denominator::Reference, Denominator::Paper}) {
    auto cfg = small_cfg(d);
    auto bank = to_tensor(kBank).requires_grad_(true);
    auto z = to_tensor(kZ).requires_grad_(true);
    auto anchors = torch::tensor({0L, 1L});
    auto prop = to_index(kProp);
    auto r = invariance_loss(z, bank, anchors, prop, 0.6, cfg);
    r.total.backward();
    EXPECT_FALSE(bank.grad().defined());
    ASSERT_TRUE(z.grad().defined());
    const double analytic = z.grad()[1][2].item<double>();

    const double h = 1e-6;
    auto f = [&](double delta) {
      auto zp = to_tensor(kZ);
      zp[1][2] += delta;
      return val(invariance_loss(zp, to_tensor(kBank), anchors, prop, 0.6, cfg).total);
    };
    const double numeric = (f(h) - f(-h)) / (2 * h);
    EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)));
    EXPECT_GT(std::abs(analytic), 1e-6);
  }
}

TEST(InvarianceLoss, WithoutInvarianceEqualsInstance) {
  auto cfg = small_cfg(Denominator::Reference);
  cfg.use_invariance = false;
  auto r = invariance_loss(to_tensor(kZ), to_tensor(kBank), torch::tensor({0L, 1L}),
                           torch::Tensor(), 0.6, cfg);
  auto e = ref_loss(kZ, kBank, kAnchors, kProp, 4, 2, 0.2, false);
  EXPECT_NEAR(val(r.total), e.instance, 1e-9);
  EXPECT_EQ(val(r.total), val(r.instance));
  EXPECT_EQ(val(r.invariance), 0.0);
  cfg.use_invariance = true;
  EXPECT_THROW(invariance_loss(to_tensor(kZ), to_tensor(kBank), torch::tensor({0L, 1L}),
                               torch::Tensor(), 0.6, cfg),
               invp::Error);
}

TEST(Schedule, RampWeight) {
  EXPECT_EQ(ramp_weight(1, 30, false), 0.0);
  EXPECT_EQ(ramp_weight(30, 30, false), 0.0);
  EXPECT_EQ(ramp_weight(31, 30, false), 1.0);
  EXPECT_NEAR(ramp_weight(15, 30, true), std::exp(-1.25), 1e-12);
  EXPECT_NEAR(ramp_weight(1, 30, true), std::exp(-5.0 * (29.0 / 30) * (29.0 / 30)), 1e-12);
  EXPECT_NEAR(ramp_weight(30, 30, true), 1.0, 1e-12);
  EXPECT_EQ(ramp_weight(100, 30, true), 1.0);
  EXPECT_EQ(ramp_weight(1, 0, false), 1.0);
}

// The reference's adjust_learning_rate (utils.py), written out here as the oracle: `i` is its
// epoch index. Its cosine is evaluated at i = e - 1 for invp's 1-based epoch e (so E epochs run
// from lr down to just above 0); its step rule at i = e (its first trained epoch is i = 1).
double reference_lr(double lr, int i, bool cos, const std::vector<int>& steps, double rate, int max_epoch) {
  if (cos) return lr * 0.5 * (1. + std::cos(std::acos(-1.0) * i / max_epoch));
  for (int m : steps) lr *= i >= m ? rate : 1.;
  return lr;
}

TEST(Schedule, LearningRate) {
  for (int e : {1, 2, 200, 400, 401, 799, 800})
    EXPECT_NEAR(learning_rate(0.03, e, 800, "cosine"), reference_lr(0.03, e - 1, true, {}, 0, 800), 1e-15) << e;
  EXPECT_NEAR(learning_rate(0.03, 1, 800, "cosine"), 0.03, 1e-15);  // the first epoch at lr
  EXPECT_NEAR(learning_rate(0.03, 401, 800, "cosine"), 0.015, 1e-12);
  // The last epoch learns: for E epochs its rate is ½·lr·(1 + cos(π(E−1)/E)) > 0.
  for (int E : {1, 2, 5, 28, 800}) {
    EXPECT_GT(learning_rate(0.03, E, E, "cosine"), 0.0) << E;
    EXPECT_NEAR(learning_rate(0.03, E, E, "cosine"), 0.015 * (1 + std::cos(std::acos(-1.0) * (E - 1) / E)), 1e-15);
  }
  // The earlier curve, kept for checkpoints written with it: e / E, last epoch at 0.
  EXPECT_NEAR(learning_rate(0.03, 800, 800, "cosine", {}, 0.1, kLrCurveFirst), 0.0, 1e-12);
  EXPECT_NEAR(learning_rate(0.03, 400, 800, "cosine", {}, 0.1, kLrCurveFirst), 0.015, 1e-12);
  // Step, the reference's 400,600,700 of 800 at the epochs where it changes.
  const std::vector<int> ms{400, 600, 700};
  for (int e : {1, 399, 400, 401, 599, 600, 699, 700, 800})
    EXPECT_NEAR(learning_rate(0.03, e, 800, "step", ms), reference_lr(0.03, e, false, ms, 0.1, 800), 1e-15) << e;
  EXPECT_NEAR(learning_rate(0.03, 399, 800, "step", ms), 0.03, 1e-15);
  EXPECT_NEAR(learning_rate(0.03, 400, 800, "step", ms), 0.003, 1e-15);
  EXPECT_NEAR(learning_rate(0.03, 600, 800, "step", ms), 0.0003, 1e-15);
  EXPECT_NEAR(learning_rate(0.03, 700, 800, "step", ms), 0.00003, 1e-15);
  EXPECT_NEAR(learning_rate(0.1, 25, 100, "step", {10, 20}, 0.5), 0.025, 1e-12);
  EXPECT_THROW(learning_rate(0.1, 1, 10, "linear"), invp::Error);
}

TEST(InvarianceLoss, TopMIndicesMatchesTopk) {
  torch::manual_seed(3);
  for (auto dt : {torch::kFloat32, torch::kFloat64}) {
    auto l = torch::randn({9, 2000}, dt);
    auto mine = std::get<0>(torch::sort(top_m_indices(l, 300), 1));
    auto ref = std::get<0>(torch::sort(std::get<1>(torch::topk(l, 300, 1, true, false)), 1));
    EXPECT_TRUE(torch::equal(mine, ref));
  }
  // Ties: the set may differ, the selected values (hence every sum) may not.
  auto t = torch::randint(0, 5, {7, 50}, torch::kFloat32);
  auto mine = std::get<0>(torch::sort(t.gather(1, top_m_indices(t, 13)), 1));
  auto ref = std::get<0>(torch::sort(std::get<0>(torch::topk(t, 13, 1)), 1));
  EXPECT_TRUE(torch::equal(mine, ref));
  auto idx = top_m_indices(t, 13);  // distinct indices per row
  EXPECT_TRUE(std::get<0>(torch::sort(idx, 1)).diff(1, 1).gt(0).all().item<bool>());
  EXPECT_TRUE(torch::equal(top_m_indices(t, 50), torch::arange(50).expand({7, 50})));
}

namespace {

// Naive reference of the losses with plain torch ops in double, differentiated by autograd
// (B × N exp, explicit per-row selections; selections are made on detached values).
LossResult naive_loss(const torch::Tensor& z, const torch::Tensor& bank,
                      const torch::Tensor& anchors, const torch::Tensor& prop, double w,
                      const LossConfig& cfg) {
  const int64_t B = z.size(0), N = bank.size(0);
  const int64_t M = std::min<int64_t>(cfg.background, N);
  auto logits = z.mm(bank.t()) / static_cast<double>(cfg.tau);
  auto e = (logits - std::get<0>(logits.detach().max(1, true))).exp();
  auto top = std::get<1>(logits.detach().topk(M, 1));
  auto S = e.gather(1, top).sum(1);
  auto ea = e.gather(1, anchors.unsqueeze(1)).squeeze(1);
  LossResult r;
  r.instance = (-torch::log(ea / S + 1e-7)).mean();
  std::vector<torch::Tensor> rows;
  for (int64_t i = 0; i < B; ++i) {
    std::vector<int64_t> members;
    for (int64_t k = 0; k < prop.size(1); ++k)
      if (prop[i][k].item<int64_t>() >= 0) members.push_back(prop[i][k].item<int64_t>());
    if (members.empty()) {
      rows.push_back(torch::zeros({}, z.options()));
      continue;
    }
    auto li = logits[i].detach();
    std::stable_sort(members.begin(), members.end(), [&](int64_t a, int64_t b) {
      return cfg.easiest_positives ? li[a].item<double>() > li[b].item<double>()
                                   : li[a].item<double>() < li[b].item<double>();
    });
    members.resize(std::min<size_t>(members.size(), static_cast<size_t>(cfg.hard_positives)));
    auto H = e[i].index_select(0, torch::tensor(members)).sum();  // with multiplicity
    torch::Tensor den;
    if (cfg.denominator == Denominator::Reference) {
      den = S[i] - ea[i];
    } else if (cfg.denominator == Denominator::Plain) {
      den = S[i];
    } else {
      auto in_n = torch::zeros({N}, torch::kBool);
      for (int64_t k = 0; k < prop.size(1); ++k)
        if (prop[i][k].item<int64_t>() >= 0) in_n[prop[i][k].item<int64_t>()] = true;
      auto keep = in_n.index_select(0, top[i]).logical_not();
      den = (e[i].index_select(0, top[i]) * keep.to(torch::kFloat64)).sum() + H;
    }
    rows.push_back(-torch::log(H / den + 1e-7));
  }
  r.invariance = torch::stack(rows).mean();
  r.total = r.instance + w * r.invariance;
  return r;
}

}  // namespace

TEST(InvarianceLoss, HandWrittenGradientMatchesAutogradOfNaiveLoss) {
  torch::manual_seed(11);
  const int64_t N = 60, D = 8, B = 7;
  auto bank = torch::nn::functional::normalize(torch::randn({N, D}, torch::kFloat64),
                                               torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto anchors = torch::tensor({3L, 10L, 17L, 24L, 31L, 38L, 45L});
  auto z0 = torch::nn::functional::normalize(
      bank.index_select(0, anchors) + 0.5 * torch::randn({B, D}, torch::kFloat64),
      torch::nn::functional::NormalizeFuncOptions().dim(1));
  // Row 6: z points away from its anchor's bank row, so the anchor is outside B_M(6).
  z0[6] = -bank[45];
  auto prop = torch::tensor({{5L, 5L, 3L, 7L, 5L, 8L, 9L, 11L},      // duplicates + the anchor
                             {-1L, -1L, -1L, -1L, -1L, -1L, -1L, -1L}, // empty N(i)
                             {1L, -1L, 2L, -1L, -1L, -1L, -1L, -1L},   // |N(i)| = 2 < P
                             {4L, 12L, 13L, 14L, 15L, 16L, 18L, 19L},
                             {20L, 21L, 22L, 20L, 23L, 25L, 26L, -1L},
                             {27L, 28L, 29L, 30L, 32L, 33L, 34L, 35L},
                             {44L, 46L, 46L, 47L, 0L, -1L, 1L, 2L}});
  for (int variant = 0; variant < 4; ++variant) {
    const auto d = variant == 3 ? Denominator::Reference : Denominator(variant);
    for (int which = 0; which < 3; ++which) {  // total, instance alone, invariance alone
      LossConfig cfg;
      cfg.tau = 0.2f;
      cfg.background = 15;
      cfg.hard_positives = 4;
      cfg.denominator = d;
      cfg.easiest_positives = variant == 3;
      auto z1 = z0.clone().requires_grad_(true);
      auto z2 = z0.clone().requires_grad_(true);
      auto mine = invariance_loss(z1, bank, anchors, prop, 0.6, cfg);
      auto ref = naive_loss(z2, bank, anchors, prop, 0.6, cfg);
      EXPECT_NEAR(val(mine.instance), val(ref.instance), 1e-12);
      EXPECT_NEAR(val(mine.invariance), val(ref.invariance), 1e-12);
      EXPECT_NEAR(val(mine.total), val(ref.total), 1e-12);
      (which == 0 ? mine.total : which == 1 ? mine.instance : mine.invariance).backward();
      (which == 0 ? ref.total : which == 1 ? ref.instance : ref.invariance).backward();
      ASSERT_TRUE(z1.grad().defined());
      EXPECT_TRUE(torch::allclose(z1.grad(), z2.grad(), 1e-9, 1e-12))
          << "variant " << variant << " output " << which << "\n"
          << z1.grad() << "\n" << z2.grad();
      EXPECT_GT(val(z1.grad().abs().max()), 1e-3);
      // The empty row still has the instance gradient, and nothing else.
      if (which == 2) {
        EXPECT_EQ(val(z1.grad()[1].abs().max()), 0.0);
      }
    }
    // The anchor of row 6 really is outside B_M(6).
    auto top6 = top_m_indices(z0.mm(bank.t()), 15)[6];
    EXPECT_FALSE(top6.eq(45).any().item<bool>());
  }
  // Without L_inv the gradient is the instance loss's.
  LossConfig cfg;
  cfg.background = 15;
  cfg.use_invariance = false;
  auto z1 = z0.clone().requires_grad_(true);
  auto z2 = z0.clone().requires_grad_(true);
  invariance_loss(z1, bank, anchors, torch::Tensor(), 0.6, cfg).total.backward();
  naive_loss(z2, bank, anchors, prop, 0.6, cfg).instance.backward();
  EXPECT_TRUE(torch::allclose(z1.grad(), z2.grad(), 1e-9, 1e-12));
}

TEST(InvarianceLoss, HandWrittenGradientFloat32) {
  torch::manual_seed(5);
  const int64_t N = 3000, D = 16, B = 9;
  auto bank = torch::nn::functional::normalize(torch::randn({N, D}),
                                               torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto anchors = torch::randperm(N, torch::kLong).narrow(0, 0, B);
  auto z0 = torch::nn::functional::normalize(bank.index_select(0, anchors) + 0.3 * torch::randn({B, D}),
                                             torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto prop = torch::randint(-1, N, {B, 30}, torch::kLong);
  for (auto d : {Denominator::Reference, Denominator::Paper}) {
    LossConfig cfg;
    cfg.background = 500;
    cfg.hard_positives = 10;
    cfg.denominator = d;
    auto z1 = z0.clone().requires_grad_(true);
    auto z2 = z0.to(torch::kFloat64).requires_grad_(true);
    auto mine = invariance_loss(z1, bank, anchors, prop, 0.6, cfg);
    auto ref = naive_loss(z2, bank.to(torch::kFloat64), anchors, prop, 0.6, cfg);
    EXPECT_EQ(mine.total.scalar_type(), torch::kFloat32);
    EXPECT_NEAR(val(mine.total), val(ref.total), 1e-4);
    mine.total.backward();
    ref.total.backward();
    EXPECT_TRUE(torch::allclose(z1.grad().to(torch::kFloat64), z2.grad(), 1e-3, 1e-5));
  }
}

TEST(InvarianceLoss, TopMIndicesSampledPathMatchesTopk) {
  // N >= 16384 takes the sampled-threshold path.
  torch::manual_seed(8);
  for (auto dt : {torch::kFloat32, torch::kFloat64}) {
    auto l = torch::randn({5, 20000}, dt);
    auto mine = std::get<0>(torch::sort(top_m_indices(l, 1000), 1));
    auto ref = std::get<0>(torch::sort(std::get<1>(torch::topk(l, 1000, 1, true, false)), 1));
    EXPECT_TRUE(torch::equal(mine, ref));
  }
  // Ties: same selected values.
  auto t = torch::randint(0, 50, {4, 20000}, torch::kFloat32);
  auto mine = std::get<0>(torch::sort(t.gather(1, top_m_indices(t, 1000)), 1));
  auto ref = std::get<0>(torch::sort(std::get<0>(torch::topk(t, 1000, 1)), 1));
  EXPECT_TRUE(torch::equal(mine, ref));
  // A row whose strided sample is unrepresentative (large values exactly on the sampled
  // columns) falls back to the exact path; a sorted row; a NaN row (topk semantics).
  auto adv = torch::rand({3, 20000});
  adv[0].slice(0, 0, 300 * (20000 / 2048), 20000 / 2048).fill_(10.0);  // 300 < M candidates
  adv[1] = torch::arange(20000, torch::kFloat32);
  adv[2][123] = std::nanf("");
  auto mine2 = std::get<0>(torch::sort(top_m_indices(adv, 1000), 1));
  auto ref2 = std::get<0>(torch::sort(std::get<1>(torch::topk(adv, 1000, 1, true, false)), 1));
  EXPECT_TRUE(torch::equal(mine2, ref2));
}

namespace {
// Random bank / batch / propagated sets with -1 padding, duplicates and empty rows.
struct LossCase {
  torch::Tensor bank, anchors, z, prop;
};
LossCase loss_case(int64_t N, int64_t D, int64_t B, int64_t L, torch::Dtype dt, uint64_t seed) {
  torch::manual_seed(seed);
  auto norm = [](const torch::Tensor& x) {
    return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1));
  };
  LossCase c;
  c.bank = norm(torch::randn({N, D}, dt));
  c.anchors = torch::randperm(N, torch::kLong).narrow(0, 0, B);
  c.z = norm(c.bank.index_select(0, c.anchors) + 0.4 * torch::randn({B, D}, dt));
  c.prop = torch::randint(-1, N, {B, L}, torch::kLong);
  c.prop[0].fill_(-1);                      // empty N(i)
  c.prop[1].slice(0, 0, L / 2).fill_(c.prop[1][0].item<int64_t>());  // duplicates
  c.prop[2].slice(0, 2).fill_(-1);          // |N(i)| = 2 < P
  return c;
}
}  // namespace

// The device-generic path (used for CUDA) against the CPU kernel, on CPU: same values and
// gradients for both denominators, with and without L_inv, on the exact and sampled top-M paths.
TEST(InvarianceLoss, TensorOpsPathMatchesCpuKernel) {
  struct Size { int64_t N, M; torch::Dtype dt; double vtol, gtol; };
  for (auto sz : {Size{3000, 500, torch::kFloat64, 1e-10, 1e-10}, Size{20000, 4096, torch::kFloat32, 2e-4, 2e-5}}) {
    auto c = loss_case(sz.N, 16, 12, 40, sz.dt, 21);
    for (auto d : {Denominator::Reference, Denominator::Paper, Denominator::Plain}) {
      for (bool inv : {true, false}) {
        LossConfig cfg;
        cfg.background = sz.M;
        cfg.hard_positives = 10;
        cfg.denominator = d;
        cfg.easiest_positives = d == Denominator::Plain;  // one pass covers the selection too
        cfg.use_invariance = inv;
        auto z1 = c.z.clone().requires_grad_(true);
        auto z2 = c.z.clone().requires_grad_(true);
        auto k = invariance_loss(z1, c.bank, c.anchors, c.prop, 0.6, cfg);
        auto o = invariance_loss_tensor_ops(z2, c.bank, c.anchors, c.prop, 0.6, cfg);
        EXPECT_NEAR(val(k.instance), val(o.instance), sz.vtol);
        EXPECT_NEAR(val(k.invariance), val(o.invariance), sz.vtol);
        k.total.backward();
        o.total.backward();
        EXPECT_TRUE(torch::allclose(z1.grad(), z2.grad(), 1e-4, sz.gtol))
            << "N " << sz.N << " denominator " << int(d) << " inv " << inv;
        if (inv) {
          EXPECT_GT(std::abs(val(o.invariance)), 1e-3);
        }
      }
    }
  }
}

// On a GPU, the loss computed on the device agrees with the CPU kernel to 1e-4.
TEST(InvarianceLoss, CudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto c = loss_case(60000, 128, 128, 84, torch::kFloat32, 4);
  for (auto d : {Denominator::Reference, Denominator::Paper}) {
    LossConfig cfg;
    cfg.denominator = d;
    auto z1 = c.z.clone().requires_grad_(true);
    auto z2 = c.z.to(torch::kCUDA).requires_grad_(true);
    auto cpu = invariance_loss(z1, c.bank, c.anchors, c.prop, 0.6, cfg);
    auto gpu = invariance_loss(z2, c.bank.to(torch::kCUDA), c.anchors.to(torch::kCUDA),
                               c.prop.to(torch::kCUDA), 0.6, cfg);
    EXPECT_TRUE(gpu.total.device().is_cuda());
    EXPECT_NEAR(val(cpu.total), val(gpu.total.cpu()), 1e-4);
    cpu.total.backward();
    gpu.total.backward();
    EXPECT_TRUE(torch::allclose(z1.grad(), z2.grad().cpu(), 1e-3, 1e-5));
  }
}
