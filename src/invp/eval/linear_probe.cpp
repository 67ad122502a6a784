#include <invp/eval/linear_probe.h>

#include <invp/core/error.h>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

namespace invp::eval {
namespace {
// Top-1 and top-5 of logits against labels (all rows labelled).
std::pair<double, double> accuracy(const torch::Tensor& logits, const torch::Tensor& labels) {
  if (labels.numel() == 0) return {0, 0};
  const int64_t k = std::min<int64_t>(5, logits.size(1));
  auto top = std::get<1>(logits.topk(k, 1));
  auto hit = top.eq(labels.unsqueeze(1));
  const double n = double(labels.numel());
  return {hit.select(1, 0).sum().item<double>() / n, hit.any(1).sum().item<double>() / n};
}
}  // namespace

LinearProbeResult linear_probe(const at::Tensor& train_features, const at::Tensor& train_labels,
                               const at::Tensor& test_features, const at::Tensor& test_labels,
                               const LinearProbeOptions& o) {
  torch::NoGradGuard outer;
  if (o.epochs < 1 || o.batch_size < 1 || !(o.lr > 0))
    throw Error("", "linear probe: epochs, batch size and learning rate must be positive");
  auto keep_tr = train_labels.ge(0), keep_te = test_labels.ge(0);
  auto x = train_features.index({keep_tr}).to(torch::kFloat);
  auto y = train_labels.index({keep_tr}).to(torch::kLong);
  auto xt = test_features.index({keep_te}).to(torch::kFloat);
  auto yt = test_labels.index({keep_te}).to(torch::kLong);
  if (x.size(0) == 0) throw Error("", "linear probe: the train split has no labelled rows", "give a labelled --train");
  if (xt.size(1) != x.size(1)) throw Error("", "linear probe: train and test features differ in width");
  int64_t classes = y.max().item<int64_t>() + 1;
  if (yt.numel() > 0) classes = std::max(classes, yt.max().item<int64_t>() + 1);
  auto mean = x.mean(0, true);
  auto sd = x.std(0, /*unbiased=*/false, true).clamp_min(1e-6);
  x = (x - mean) / sd;
  xt = (xt - mean) / sd;

  auto layer = torch::nn::Linear(x.size(1), classes);
  torch::nn::init::zeros_(layer->weight);  // a deterministic start: the result depends on the seed only
  torch::nn::init::zeros_(layer->bias);
  torch::optim::SGD opt(layer->parameters(),
                        torch::optim::SGDOptions(o.lr).momentum(0.9).weight_decay(o.weight_decay));
  const int64_t n = x.size(0);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::mt19937_64 rng(o.seed);
  const double pi = std::acos(-1.0);
  for (int e = 0; e < o.epochs; ++e) {
    const double lr = 0.5 * o.lr * (1 + std::cos(pi * e / o.epochs));
    for (auto& g : opt.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
    std::iota(order.begin(), order.end(), 0);
    for (int64_t i = n - 1; i > 0; --i) std::swap(order[size_t(i)], order[size_t(rng() % uint64_t(i + 1))]);
    auto perm = torch::tensor(order, torch::kLong);
    for (int64_t b = 0; b < n; b += o.batch_size) {
      auto idx = perm.slice(0, b, std::min(n, b + o.batch_size));
      torch::AutoGradMode grad(true);
      opt.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(layer->forward(x.index_select(0, idx)), y.index_select(0, idx));
      loss.backward();
      opt.step();
    }
  }
  LinearProbeResult r;
  std::tie(r.top1, r.top5) = accuracy(layer->forward(xt), yt);
  r.train_top1 = accuracy(layer->forward(x), y).first;
  r.evaluated = yt.numel();
  return r;
}

}  // namespace invp::eval
