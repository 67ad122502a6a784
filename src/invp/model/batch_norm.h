// BatchNorm layers of the encoders: LibTorch's BatchNorm1d/2d (same parameters, buffers and
// arithmetic) that, in training mode and while a synchroniser is set, normalise with statistics
// over every rank's batch (SyncBatchNorm; train --sync-bn). The model stage knows no process
// group: the trainer hands in the sum-over-ranks as a function.
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <ostream>

namespace invp::model {

// Sums a tensor over all ranks, in place. Empty: per-rank statistics (plain BatchNorm).
using AllreduceSum = std::function<void(torch::Tensor&)>;
void set_batch_norm_sync(AllreduceSum sum);
bool batch_norm_synced();

// In training mode with a synchroniser set, forward() computes y = γ·(x − μ)/√(σ² + ε) + β with
// μ, σ² over every dimension but 1 of the global batch, and updates the running statistics from
// the global ones (unbiased variance), as PyTorch's SyncBatchNorm. Gradients: the input's
// through the global sums; γ's and β's this rank's share (the gradient allreduce averages them).
// Parameters and buffers as torch::nn::BatchNorm1d/2d register them (weight, bias, running_mean,
// running_var, num_batches_tracked; momentum 0.1, eps 1e-5), so model.pt files load either way.
// One class for N×C and N×C×H×W inputs. (Subclassing LibTorch's classes does not link: 1.13
// exports no BatchNormImplBase::pretty_print for a subclass's vtable.)
class BatchNormImpl : public torch::nn::Cloneable<BatchNormImpl> {
 public:
  explicit BatchNormImpl(int64_t features);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  int64_t features;
  double momentum = 0.1, eps = 1e-5;
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
};
TORCH_MODULE(BatchNorm);

}  // namespace invp::model
