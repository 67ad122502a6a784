// The encoder's half of a training step, forward and backward + SGD, replayed from two CUDA
// graphs (what PyTorch's make_graphed_callables does, with the optimiser step inside the
// backward graph). On a GPU this half is launch-bound at batch 128 and 32 px: a few hundred
// small kernels that LibTorch issues one by one from the host. A replay issues them all at
// once, so the host runs ahead and the GPU stops waiting for it.
//
// The method's half (propagation, the loss, the bank update) has shapes that change every
// step and stays eager: the trainer differentiates the loss with respect to z alone and hands
// that gradient in. The split gives the same gradients as one backward through both.
//
//   auto z = step.forward(images);                 // B × D, normalised, no grad
//   auto zl = z.detach().requires_grad_(true);
//   auto loss = f(zl);
//   step.backward_and_step(torch::autograd::grad({loss}, {zl})[0]);
//
// The first `eager_steps` steps run eagerly (cuDNN picks its algorithms, the optimiser creates
// its momentum buffers), then both graphs are captured together and replayed. They are
// captured again when the learning rate or the batch shape changes: the SGD step is baked in
// with its learning rate, so under the cosine schedule once an epoch, which the trainer does
// at the epoch's end through recapture(). Anything else that moves the model's tensors
// (loading a checkpoint into it) must be followed by invalidate().
// While capturing, no other thread may use the GPU in ways CUDA forbids during a capture:
// `before_capture` runs first to quiet them (the trainer waits for its checkpoint writer).
// Should a capture fail anyway, the step says so once on the log and stays eager.
// Without CUDA (a CPU LibTorch, or a CPU model) every step is eager.
#pragma once
#include <invp/model/encoder.h>

#include <torch/optim/sgd.h>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>

namespace invp::train {

class GraphedStep {
 public:
  GraphedStep(model::Encoder net, torch::optim::SGD& opt, int eager_steps = 2,
              std::function<void()> before_capture = {});
  ~GraphedStep();
  GraphedStep(const GraphedStep&) = delete;
  GraphedStep& operator=(const GraphedStep&) = delete;

  // The model in training mode on `images` (host, pinned host, or on the model's device):
  // normalised embeddings z, B × D on the model's device, without a gradient history. Valid
  // until the next forward(), which may overwrite them in place.
  torch::Tensor forward(const torch::Tensor& images);
  // Backpropagates dL/dz (B × D, on the device) from the last forward() into the parameters
  // and takes the optimiser's step (its current learning rate, momentum and weight decay).
  void backward_and_step(const torch::Tensor& grad_z);
  // Drops the captured graphs: the next step after this is captured again.
  void invalidate();
  // Captures again now if the optimiser's learning rate is no longer the captured one (else
  // the next forward() would), at a moment the caller chooses. The model must be in training
  // mode. Nothing before the first capture.
  void recapture();

  int64_t captures() const { return captures_; }  // graph pairs captured so far
  int64_t replays() const { return replays_; }    // steps taken from the graphs

 private:
  struct Graphs;
  bool want_graphs(const torch::Tensor& images) const;
  void capture(const torch::Tensor& images);

  model::Encoder net_;
  torch::optim::SGD& opt_;
  int eager_steps_;
  int64_t steps_ = 0, captures_ = 0, replays_ = 0;
  torch::Tensor z_eager_;  // an eager step's z, with its history
  std::unique_ptr<Graphs> graphs_;
  std::function<void()> before_capture_;
  bool replaying_ = false;  // the last forward() was a replay
  bool failed_ = false;     // a capture failed: eager from then on
};

// True when this build can capture CUDA graphs (a CUDA LibTorch 2.x).
bool cuda_graphs_built();

}  // namespace invp::train
