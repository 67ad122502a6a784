#include <invp/core/error.h>
#include <invp/model/batch_norm.h>
#include <invp/model/encoder.h>

#include <torch/nn/functional/normalization.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/pooling.h>

namespace invp::model {
namespace nn = torch::nn;
namespace {

nn::Conv2d conv(int in, int out, int kernel, int stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

// torchvision's BasicBlock (expansion 1) and Bottleneck (expansion 4, stride on the 3×3).
class BlockImpl : public nn::Module {
 public:
  BlockImpl(int in, int planes, int stride, bool bottleneck) {
    int out = bottleneck ? planes * 4 : planes;
    if (bottleneck) {
      body_ = nn::Sequential(conv(in, planes, 1, 1), BatchNorm(planes), nn::ReLU(true),
                             conv(planes, planes, 3, stride), BatchNorm(planes), nn::ReLU(true),
                             conv(planes, out, 1, 1), BatchNorm(out));
    } else {
      body_ = nn::Sequential(conv(in, planes, 3, stride), BatchNorm(planes), nn::ReLU(true),
                             conv(planes, planes, 3, 1), BatchNorm(planes));
    }
    register_module("body", body_);
    if (stride != 1 || in != out) {
      shortcut_ = nn::Sequential(conv(in, out, 1, stride), BatchNorm(out));
      register_module("shortcut", shortcut_);
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto identity = shortcut_ ? shortcut_->forward(x) : x;
    return torch::relu(body_->forward(x) + identity);
  }

 private:
  nn::Sequential body_{nullptr}, shortcut_{nullptr};
};
TORCH_MODULE(Block);

std::vector<int> blocks_per_stage(int depth) {
  if (depth == 18) return {2, 2, 2, 2};
  return {3, 4, 6, 3};  // 34 and 50
}
}  // namespace

int EncoderConfig::feature_width() const { return width * 8 * (depth == 50 ? 4 : 1); }

void EncoderConfig::validate() const {
  if (depth != 18 && depth != 34 && depth != 50)
    throw Error("", "unsupported ResNet depth " + std::to_string(depth), "use 18, 34 or 50");
  if (stem != "small" && stem != "imagenet")
    throw Error("", "unknown stem '" + stem + "'", "use small or imagenet");
  if (head != "linear" && head != "mlp" && head != "mlp-bn")
    throw Error("", "unknown head '" + head + "'", "use linear, mlp or mlp-bn");
  if (in_channels != 1 && in_channels != 3)
    throw Error("", "input channels must be 1 or 3, not " + std::to_string(in_channels));
  if (width < 1 || dim < 1) throw Error("", "width and dim must be positive");
}

EncoderImpl::EncoderImpl(const EncoderConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  int w = cfg_.width;
  stem_ = nn::Sequential();
  if (cfg_.stem == "small") {
    stem_->push_back(conv(cfg_.in_channels, w, 3, 1));
    stem_->push_back(BatchNorm(w));
    stem_->push_back(nn::ReLU(true));
  } else {
    stem_->push_back(conv(cfg_.in_channels, w, 7, 2));
    stem_->push_back(BatchNorm(w));
    stem_->push_back(nn::ReLU(true));
    stem_->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1)));
  }
  bool bottleneck = cfg_.depth == 50;
  body_ = nn::Sequential();
  int in = w;
  auto counts = blocks_per_stage(cfg_.depth);
  for (size_t s = 0; s < counts.size(); ++s) {
    int planes = w << s;
    for (int b = 0; b < counts[s]; ++b) {
      int stride = (s > 0 && b == 0) ? 2 : 1;
      body_->push_back(Block(in, planes, stride, bottleneck));
      in = bottleneck ? planes * 4 : planes;
    }
  }
  int f = cfg_.feature_width();
  if (cfg_.head == "linear")
    head_ = nn::Sequential(nn::Linear(f, cfg_.dim));
  else if (cfg_.head == "mlp")
    head_ = nn::Sequential(nn::Linear(f, f), nn::ReLU(true), nn::Linear(f, cfg_.dim));
  else  // mlp-bn: the hidden layer batch-normalised (SimCLR / MoCo v2 style)
    head_ = nn::Sequential(nn::Linear(nn::LinearOptions(f, f).bias(false)), BatchNorm(f),
                           nn::ReLU(true), nn::Linear(f, cfg_.dim));
  register_module("stem", stem_);
  register_module("body", body_);
  register_module("head", head_);
  // torchvision's init: Kaiming-normal (fan_out) for convs, BN weight 1 / bias 0.
  for (auto& m : modules(false)) {
    if (auto* c = m->as<nn::Conv2d>())
      nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
  }
}

torch::Tensor EncoderImpl::features(const torch::Tensor& x) {
  auto h = body_->forward(stem_->forward(x));
  return torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1);
}

torch::Tensor EncoderImpl::head(const torch::Tensor& f) { return head_->forward(f); }
torch::Tensor EncoderImpl::forward(const torch::Tensor& x) { return head(features(x)); }

torch::Tensor normalise_rows(const torch::Tensor& x) {
  return nn::functional::normalize(x, nn::functional::NormalizeFuncOptions().dim(1));
}

}  // namespace invp::model
