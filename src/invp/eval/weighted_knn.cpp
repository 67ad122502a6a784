#include <invp/core/error.h>
#include <invp/eval/weighted_knn.h>
#include <invp/index/exact_knn.h>

#include <ATen/ATen.h>

#include <algorithm>

namespace invp::eval {

at::Tensor knn_votes(const at::Tensor& idx, const at::Tensor& sim, const at::Tensor& train_labels,
                     int64_t num_classes, double sigma) {
  auto labels = train_labels.index_select(0, idx.flatten()).view_as(idx);  // Q×K
  auto weights = (sim / sigma).exp();
  auto votes = at::zeros({idx.size(0), num_classes}, sim.options());
  // Neighbours whose label is unknown (−1) do not vote.
  auto valid = labels.ge(0);
  votes.scatter_add_(1, labels.clamp_min(0), weights * valid.to(weights.scalar_type()));
  return votes;
}

KnnAccuracy weighted_knn(const at::Tensor& train_features, const at::Tensor& train_labels,
                         const at::Tensor& test_features, const at::Tensor& test_labels, int k,
                         double sigma) {
  if (train_features.size(0) != train_labels.size(0) || test_features.size(0) != test_labels.size(0))
    throw Error("", "weighted kNN: features and labels disagree in length");
  int64_t classes = train_labels.max().item<int64_t>() + 1;
  if (classes <= 0) throw Error("", "weighted kNN needs labelled training data");
  k = int(std::min<int64_t>(k, train_features.size(0)));
  auto nn = index::knn_inner_product(test_features.contiguous(), train_features.contiguous(), k,
                                     /*exclude_self=*/false);
  auto votes = knn_votes(nn.indices, nn.similarities, train_labels.to(at::kLong), classes, sigma);
  auto truth = test_labels.to(at::kLong);
  auto mask = truth.ge(0);
  int64_t n = mask.sum().item<int64_t>();
  KnnAccuracy acc;
  acc.evaluated = n;
  if (n == 0) return acc;
  auto top = std::get<1>(votes.topk(std::min<int64_t>(5, classes), 1));  // Q×5, best first
  auto hit = top.eq(truth.unsqueeze(1));
  acc.top1 = (hit.select(1, 0) & mask).sum().item<double>() / double(n);
  acc.top5 = (hit.any(1) & mask).sum().item<double>() / double(n);
  return acc;
}
}  // namespace invp::eval
