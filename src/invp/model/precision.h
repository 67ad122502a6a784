// bfloat16 training on the CPU. Inside a CpuBf16Autocast scope LibTorch's autocast runs
// convolutions and linear layers in bfloat16 (BatchNorm takes bf16 activations, keeps float32
// statistics); parameters, their gradients and the optimiser stay float32. With the
// convolution weights channels-last, oneDNN uses its AMX kernels, and the encoder's forward +
// backward beats float32 on a CPU with AMX (BENCHMARKS.md, "Session 12: bf16 on the CPU").
#pragma once
#include <invp/model/encoder.h>

#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include <string>

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

// What a requested precision comes to on the CPU: "bf16" or "fp32". "auto" is bf16 where
// the CPU has AMX and `auto_bf16_pays` (the caller's measured rule), else fp32; "fp32" and
// "tf32" (a GPU mode) are fp32; "bf16" is bf16, or throws invp::Error (flag `flag`) on a CPU
// without bfloat16 instructions, where oneDNN has no bf16 convolution.
std::string resolve_cpu_precision(const std::string& requested, bool auto_bf16_pays,
                                  const std::string& flag = "--precision");

// Puts every 4-d parameter (the convolution weights) into channels-last memory order, in
// place: the values are unchanged and optimisers holding the parameters keep working. The
// convolutions then run oneDNN's channels-last kernels, in float32 too: a float32 training
// step is faster from width 16 (slower at width 8) and a forward pass faster at every width,
// with the same values to float rounding (BENCHMARKS.md, "Session 13").
void to_channels_last(torch::nn::Module& net);

// Whether CPU training of an encoder of `width` should use to_channels_last: always for bf16
// (oneDNN's AMX kernels need it), in float32 from width 16 (faster epochs from 16, slower
// at 8; BENCHMARKS.md, "Session 13").
bool channels_last_pays_in_cpu_training(bool bf16, int width);

// net.features(images) and net.forward(images) as every caller runs them: with `bf16` (CPU
// only) the backbone in bfloat16 (the images made channels-last, to match weights put there by
// to_channels_last) and the projection head in float32. The output is float32 either way.
torch::Tensor features(EncoderImpl& net, const torch::Tensor& images, bool bf16);
torch::Tensor forward(EncoderImpl& net, const torch::Tensor& images, bool bf16);

}  // namespace invp::model
