// torch::optim::SGD's step (momentum, weight decay, dampening; not Nesterov) as four
// multi-tensor (foreach) kernels per parameter group instead of about four small kernels per
// parameter. On a GPU the per-parameter step is launch-bound: ResNet-18's 62 tensors cost ~250
// launches a step. The optimiser's own momentum buffers are updated in place, so checkpoints
// and a later opt.step() see the same state.
#pragma once
#include <torch/optim/sgd.h>

#include <vector>

namespace invp::train {

// Applies one step and returns true; returns false, changing nothing, when it cannot (a
// buffer not yet created, i.e. the first step, or Nesterov): then call opt.step() instead.
bool foreach_sgd_step(torch::optim::SGD& opt);

// The same step with the gradients given instead of read from p.grad(): grads[i] belongs to
// the i-th parameter of opt's groups in order (an undefined one skips its parameter). This is
// the step a CUDA graph captures (graphed_step.h), where the gradients are the captured
// backward's outputs and .grad() is never written.
bool foreach_sgd_step(torch::optim::SGD& opt, const std::vector<at::Tensor>& grads);

// The momentum buffer torch::optim::SGD keeps for parameter p (undefined before p's first
// step), and setting it (an undefined buf removes p's state).
at::Tensor momentum_buffer(torch::optim::SGD& opt, const at::Tensor& p);
void set_momentum_buffer(torch::optim::SGD& opt, const at::Tensor& p, const at::Tensor& buf);

}  // namespace invp::train
