// Linear evaluation (the paper's headline protocol): a linear classifier (softmax regression)
// trained on frozen features of the train split, top-1 on the test split. Features are
// row-major float N×D; labels int64, rows labelled −1 are skipped on both sides.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace invp::eval {

struct LinearProbeOptions {
  int epochs = 100;
  int batch_size = 256;
  double lr = 0.1;            // SGD with momentum 0.9, cosine-decayed over the epochs
  double weight_decay = 0.0;
  uint64_t seed = 0;          // the mini-batch order
};

struct LinearProbeResult {
  double top1 = 0, top5 = 0;  // on the test split
  double train_top1 = 0;      // on the train split, after training (how well a line fits)
  int64_t evaluated = 0;      // labelled test rows
};

// Features are standardised with the train split's per-dimension mean and standard deviation
// (frozen features' scales differ by orders of magnitude between dimensions; this makes one
// learning rate fit every model). Throws invp::Error without labelled train rows.
LinearProbeResult linear_probe(const at::Tensor& train_features, const at::Tensor& train_labels,
                               const at::Tensor& test_features, const at::Tensor& test_labels,
                               const LinearProbeOptions& options = {});

}  // namespace invp::eval
