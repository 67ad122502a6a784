#include <invp/train/memory_bank.h>

#include <invp/core/error.h>

#include <cmath>
#include <random>
#include <string>

namespace invp::train {

MemoryBank::MemoryBank(int64_t n, int64_t dim, uint64_t seed) {
  if (n <= 0 || dim <= 0) {
    throw invp::Error("", "memory bank needs n > 0 and dim > 0, got n=" + std::to_string(n) +
                              " dim=" + std::to_string(dim));
  }
  const double s = 1.0 / std::sqrt(static_cast<double>(dim) / 3.0);
  data_ = torch::empty({n, dim}, torch::kFloat32);
  float* p = data_.data_ptr<float>();
  std::mt19937_64 rng(seed);
  const int64_t total = n * dim;
  for (int64_t k = 0; k < total; ++k) {
    // 53-bit uniform in [0, 1): portable, unlike std::uniform_real_distribution.
    const double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
    p[k] = static_cast<float>((2.0 * u - 1.0) * s);
  }
}

void MemoryBank::update(const torch::Tensor& indices, const torch::Tensor& features,
                        float momentum) {
  torch::NoGradGuard no_grad;
  if (indices.dim() != 1 || features.dim() != 2 || features.size(0) != indices.size(0) ||
      features.size(1) != data_.size(1)) {
    throw invp::Error("", "memory bank update: expected indices [B] and features [B, " +
                              std::to_string(data_.size(1)) + "]");
  }
  if (indices.numel() == 0) return;
  auto idx = indices.to(data_.device(), torch::kLong);
  auto z = features.detach().to(data_.device(), data_.scalar_type());
  auto v = data_.index_select(0, idx).mul_(momentum).add_(z, 1.0f - momentum);
  v.div_(v.norm(2, 1, /*keepdim=*/true).clamp_min(1e-12));
  data_.index_copy_(0, idx, v);
}

}  // namespace invp::train
