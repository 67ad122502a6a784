// Weighted kNN classifier (Wu et al. 2018; the paper's monitor): each test feature takes its
// K most similar training features (inner product of L2-normalised rows), each votes for
// its label with weight exp(sim/σ). Features are row-major float N×D, already normalised;
// labels int64, −1 rows are ignored on the test side.
#pragma once
#include <ATen/core/Tensor.h>

namespace invp::eval {

constexpr int kKnnMonitorK = 200;        // docs/ALGORITHM.md, "Evaluation protocols"
constexpr double kKnnMonitorSigma = 0.07;

struct KnnAccuracy {
  double top1 = 0, top5 = 0;
  int64_t evaluated = 0;
};

// Per-class vote scores (Q×C) from neighbour indices/similarities (Q×K).
at::Tensor knn_votes(const at::Tensor& neighbor_idx, const at::Tensor& neighbor_sim,
                     const at::Tensor& train_labels, int64_t num_classes, double sigma);

KnnAccuracy weighted_knn(const at::Tensor& train_features, const at::Tensor& train_labels,
                         const at::Tensor& test_features, const at::Tensor& test_labels,
                         int k = kKnnMonitorK, double sigma = kKnnMonitorSigma);

}  // namespace invp::eval
