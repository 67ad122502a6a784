// Encoders: the ResNet family with torchvision's block structure, two stems and a
// projection head. forward() takes N×C×H×W float (normalised images) and returns N×D
// un-normalised embeddings; features() returns the pooled N×F backbone output.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <string>
#include <vector>

namespace invp::model {

struct EncoderConfig {
  int depth = 18;               // 18, 34 or 50
  std::string stem = "small";   // "small": 3×3 stride 1, no max-pool; "imagenet": 7×7/2 + max-pool
  int width = 64;               // base channels (64 = torchvision); smaller for CPU presets
  int in_channels = 3;          // 1 or 3
  // "mlp-bn" (default): Linear-BatchNorm-ReLU-Linear, hidden = feature width. "mlp": the
  // reference code's Linear-ReLU-Linear (collapses on narrow CPU encoders, see
  // docs/ALGORITHM-NOTES.md).
  // "linear": one Linear.
  std::string head = "mlp-bn";
  int dim = 128;                // embedding dimension D
  int feature_width() const;    // F: width·8 (·4 for ResNet-50's bottlenecks)
  void validate() const;        // throws invp::Error for an unsupported combination
};

class EncoderImpl : public torch::nn::Module {
 public:
  explicit EncoderImpl(const EncoderConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor features(const torch::Tensor& x);
  torch::Tensor head(const torch::Tensor& f);  // forward(x) = head(features(x))
  const EncoderConfig& config() const { return cfg_; }

 private:
  EncoderConfig cfg_;
  torch::nn::Sequential stem_{nullptr}, body_{nullptr}, head_{nullptr};
};
TORCH_MODULE(Encoder);

// Rows scaled to unit L2 norm: an embedding z from forward() as training and search use it.
torch::Tensor normalise_rows(const torch::Tensor& x);

}  // namespace invp::model
