// How far bf16 gradients stray from float32 ones at a random init, per parameter, over many
// seeds: the spread behind Precision.Bf16ForwardAndGradientsFollowFloat32's bounds. Runs the
// backbone under CPU bf16 autocast with contiguous weights, so it also runs on CPUs without bf16
// instructions (LibTorch's reference bf16 kernels instead of oneDNN's).
// Usage: bench_bf16_gradients [seeds=100]
#include <invp/model/encoder.h>
#include <invp/model/precision.h>

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

using namespace invp::model;

namespace {
double cosine(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.flatten().to(torch::kDouble), y = b.flatten().to(torch::kDouble);
  return (x.dot(y) / (x.norm() * y.norm())).item<double>();
}
}  // namespace

int main(int argc, char** argv) {
  const int seeds = argc > 1 ? std::atoi(argv[1]) : 100;
  std::map<std::string, std::vector<double>> cos;
  for (int s = 0; s < seeds; ++s) {
    EncoderConfig cfg;
    cfg.width = 8;
    cfg.in_channels = 1;
    cfg.dim = 32;
    torch::manual_seed(3 + 1000 * s);
    Encoder fp(cfg);
    torch::manual_seed(3 + 1000 * s);
    Encoder bf(cfg);
    auto x = torch::randn({16, 1, 28, 28}), target = torch::randn({16, 32});
    (normalise_rows(fp->forward(x)) * target).sum().backward();
    torch::Tensor out;
    {
      CpuBf16Autocast autocast;
      out = bf->head(bf->features(x).to(torch::kFloat));
    }
    (normalise_rows(out) * target).sum().backward();
    std::vector<torch::Tensor> af, ab, vf, vb;
    for (auto& p : fp->named_parameters()) {
      auto gf = p.value().grad(), gb = bf->named_parameters()[p.key()].grad();
      cos[p.key()].push_back(cosine(gf, gb));
      af.push_back(gf.flatten()), ab.push_back(gb.flatten());
      if (gf.dim() < 2) vf.push_back(gf.flatten()), vb.push_back(gb.flatten());
    }
    cos["(all parameters)"].push_back(cosine(torch::cat(af), torch::cat(ab)));
    cos["(1-d parameters together)"].push_back(cosine(torch::cat(vf), torch::cat(vb)));
  }
  std::printf("%-28s %8s %8s %10s\n", "parameter", "min cos", "mean cos", "< 0.6");
  for (auto& [k, v] : cos) {
    double mn = *std::min_element(v.begin(), v.end()), mean = 0;
    int below = 0;
    for (double c : v) mean += c / double(v.size()), below += c < 0.6;
    std::printf("%-28s %8.3f %8.3f %6d/%zu\n", k.c_str(), mn, mean, below, v.size());
  }
}
