// invp eval linear's classifier: a line where one exists, and only a line.
#include <invp/core/error.h>
#include <invp/eval/linear_probe.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

using invp::eval::linear_probe;
using invp::eval::LinearProbeOptions;

namespace {
// n points per class of 3 Gaussian blobs in 5-d, far apart on the first axes, with one
// dimension of a much larger scale that carries no class (standardisation must cope).
void blobs(int64_t n, uint64_t seed, torch::Tensor& x, torch::Tensor& y) {
  torch::manual_seed(seed);
  x = torch::randn({3 * n, 5});
  y = torch::arange(3 * n, torch::kLong).div(n, "floor");
  x.select(1, 0) += 6 * (y == 0).to(torch::kFloat);
  x.select(1, 1) += 6 * (y == 1).to(torch::kFloat);
  x.select(1, 4) *= 1000;
}
}  // namespace

TEST(LinearProbe, SeparableClassesAreAllRight) {
  torch::Tensor x, y, xt, yt;
  blobs(200, 1, x, y);
  blobs(100, 2, xt, yt);
  LinearProbeOptions o;
  o.epochs = 20;
  auto r = linear_probe(x, y, xt, yt, o);
  EXPECT_EQ(r.evaluated, 300);
  EXPECT_GE(r.top1, 0.99);
  EXPECT_EQ(r.top5, 1.0);  // 3 classes: top-5 holds them all
  // The same seed gives the same classifier; unlabelled test rows are not counted.
  EXPECT_EQ(linear_probe(x, y, xt, yt, o).top1, r.top1);
  yt[0] = -1;
  auto again = linear_probe(x, y, xt, yt, o);
  EXPECT_EQ(again.evaluated, 299);
}

// XOR: the classes are not linearly separable, so a linear classifier is no better than
// about 3/4 (one line cuts off one quadrant), while a 1-NN would be near 100 %.
TEST(LinearProbe, OnlyALineXorStaysNearChance) {
  torch::manual_seed(3);
  auto x = torch::randn({800, 2});
  auto y = (x.select(1, 0).gt(0) ^ x.select(1, 1).gt(0)).to(torch::kLong);
  x = x + x.sign() * 1.0;  // a margin around the axes
  LinearProbeOptions o;
  o.epochs = 30;
  auto r = linear_probe(x.slice(0, 0, 600), y.slice(0, 0, 600), x.slice(0, 600), y.slice(0, 600), o);
  EXPECT_LT(r.top1, 0.8);
  EXPECT_LT(r.train_top1, 0.8);
}

TEST(LinearProbe, RefusesUnlabelledTrainSplit) {
  auto x = torch::randn({10, 3});
  auto y = torch::full({10}, -1, torch::kLong);
  EXPECT_THROW(linear_probe(x, y, x, y), invp::Error);
}
