// Memory bank V of the instance-discrimination / invariance-propagation losses.
// Shapes: data() is N × D float32 (one row per training image); update() takes
// indices B int64 and features B × D (already L2-normalised, detached).
#pragma once
#include <torch/torch.h>

#include <cstdint>

namespace invp::train {

class MemoryBank {
 public:
  // Rows initialised uniform in [-s, s], s = 1/sqrt(dim/3), NOT normalised (as the reference
  // code). Deterministic for a given seed (own mt19937_64, independent of torch's RNG).
  MemoryBank(int64_t n, int64_t dim, uint64_t seed);

  torch::Tensor& data() { return data_; }
  const torch::Tensor& data() const { return data_; }
  int64_t size() const { return data_.size(0); }
  int64_t dim() const { return data_.size(1); }

  // v_i <- normalise(m * v_i + (1 - m) * z_i) for every i in `indices`; `features` are the
  // batch's normalised features from before the optimiser step. No autograd.
  // Duplicate indices within one call: one of the updates wins (unspecified which).
  void update(const torch::Tensor& indices, const torch::Tensor& features, float momentum = 0.5f);

 private:
  torch::Tensor data_;
};

}  // namespace invp::train
