// bfloat16 training on the CPU. Inside a CpuBf16Autocast scope LibTorch's autocast runs
// convolutions and linear layers in bfloat16 (BatchNorm takes bf16 activations, keeps float32
// statistics); parameters, their gradients and the optimiser stay float32. With the
// convolution weights channels-last, oneDNN uses its AMX kernels: the encoder's forward +
// backward takes half the float32 time on this CPU (BENCHMARKS.md, "bf16 on the CPU").
#pragma once
#include <invp/model/encoder.h>

#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

namespace invp::model {

class CpuBf16Autocast {
 public:
  CpuBf16Autocast();
  ~CpuBf16Autocast();
  CpuBf16Autocast(const CpuBf16Autocast&) = delete;
  CpuBf16Autocast& operator=(const CpuBf16Autocast&) = delete;

 private:
  bool was_enabled_;
  c10::ScalarType was_dtype_;
};

// Puts every 4-d parameter (the convolution weights) into channels-last memory order, in
// place: the values are unchanged and optimisers holding the parameters keep working.
void to_channels_last(torch::nn::Module& net);

// net.forward(images); with `bf16`, the backbone in bfloat16 (the images made channels-last,
// to match weights put there by to_channels_last) and the projection head in float32. The
// output is float32 either way.
torch::Tensor forward(EncoderImpl& net, const torch::Tensor& images, bool bf16);

}  // namespace invp::model
