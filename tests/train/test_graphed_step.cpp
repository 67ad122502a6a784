// GraphedStep (the encoder's forward and backward + SGD, replayed from CUDA graphs on a GPU)
// against the plain step: one backward through encoder and loss, then torch::optim::SGD.
// On the CPU every step is eager and must equal the plain step bitwise (the split backward,
// dL/dz first, changes no arithmetic). On a GPU the replayed steps must give the plain steps'
// parameters, BatchNorm statistics and momentum, across a learning-rate change (a recapture).
#include <invp/model/encoder.h>
#include <invp/train/graphed_step.h>
#include <invp/train/sgd_step.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

namespace {
using invp::train::GraphedStep;

struct Rig {
  invp::model::Encoder net;
  torch::optim::SGD opt;
  explicit Rig(torch::Device dev)
      : net([] {
          torch::manual_seed(11);
          return invp::model::Encoder(invp::model::EncoderConfig{18, "small", 8, 3, "mlp-bn", 32});
        }()),
        opt(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4)) {
    net->to(dev);
    net->train();
  }
};

torch::Tensor normalise(const torch::Tensor& x) {
  return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1));
}

// Step s's batch and a loss of z: softmax cross-entropy against fixed class directions.
struct Data {
  std::vector<torch::Tensor> images, labels;
  torch::Tensor classes;
  Data(int steps, torch::Device dev) {
    torch::manual_seed(5);
    for (int s = 0; s < steps; ++s) {
      images.push_back(torch::randn({16, 3, 16, 16}).to(dev));
      labels.push_back(torch::randint(0, 10, {16}, torch::kLong).to(dev));
    }
    classes = normalise(torch::randn({10, 32})).to(dev);
  }
  torch::Tensor loss(const torch::Tensor& z, int s) const {
    return torch::nn::functional::cross_entropy(torch::mm(z, classes.t()) / 0.2, labels[s]);
  }
};

double lr_at(int s) { return s < 5 ? 0.05 : 0.02; }  // a change mid-run: the graphs are recaptured

void set_lr(torch::optim::SGD& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
}

void plain_step(Rig& r, const Data& d, int s) {
  set_lr(r.opt, lr_at(s));
  r.opt.zero_grad();
  d.loss(normalise(r.net->forward(d.images[s])), s).backward();
  r.opt.step();
}

void graphed_step(Rig& r, GraphedStep& g, const Data& d, int s) {
  set_lr(r.opt, lr_at(s));
  auto z = g.forward(d.images[s]);
  auto zl = z.detach().requires_grad_(true);
  g.backward_and_step(torch::autograd::grad({d.loss(zl, s)}, {zl})[0]);
}

// Largest |a − b| over parameters, buffers (BatchNorm statistics) and momentum buffers.
double max_state_diff(Rig& a, Rig& b, bool momentum = true) {
  double m = 0;
  auto pa = a.net->parameters(), pb = b.net->parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    m = std::max(m, (pa[i] - pb[i]).abs().max().item<double>());
    if (!momentum) continue;
    auto ma = invp::train::momentum_buffer(a.opt, pa[i]), mb = invp::train::momentum_buffer(b.opt, pb[i]);
    EXPECT_EQ(ma.defined(), mb.defined());
    if (ma.defined() && mb.defined()) m = std::max(m, (ma - mb).abs().max().item<double>());
  }
  auto ba = a.net->buffers(), bb = b.net->buffers();
  for (size_t i = 0; i < ba.size(); ++i)
    m = std::max(m, (ba[i].to(torch::kDouble) - bb[i].to(torch::kDouble)).abs().max().item<double>());
  return m;
}
}  // namespace

TEST(GraphedStep, EagerOnTheCpuEqualsThePlainStepBitwise) {
  const torch::Device cpu(torch::kCPU);
  Rig plain(cpu), split(cpu);
  Data d(4, cpu);
  GraphedStep g(split.net, split.opt);
  for (int s = 0; s < 4; ++s) {
    plain_step(plain, d, s);
    graphed_step(split, g, d, s);
  }
  g.recapture();  // nothing captured on the CPU, nothing to do
  EXPECT_EQ(g.captures(), 0);
  EXPECT_EQ(g.replays(), 0);
  EXPECT_EQ(max_state_diff(plain, split), 0.0);
  Rig fresh(cpu);
  EXPECT_GT(max_state_diff(plain, fresh, false), 0.0) << "the steps changed nothing";
  EXPECT_THROW(g.backward_and_step(torch::zeros({16, 32})), std::exception) << "no forward() before";
}

TEST(GraphedStep, ReplaysMatchThePlainStepsOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!invp::train::cuda_graphs_built()) GTEST_SKIP() << "this LibTorch cannot capture CUDA graphs";
  auto& ctx = at::globalContext();
  const bool det = ctx.deterministicCuDNN(), bench = ctx.benchmarkCuDNN();
  const bool tf32 = ctx.allowTF32CuDNN(), tf32mm = ctx.allowTF32CuBLAS();
  ctx.setDeterministicCuDNN(true);  // the same convolution algorithms in both runs
  ctx.setBenchmarkCuDNN(false);
  ctx.setAllowTF32CuDNN(false);
  ctx.setAllowTF32CuBLAS(false);
  const torch::Device dev(torch::kCUDA);
  const int steps = 9;
  Rig plain(dev), graphed(dev);
  Data d(steps, dev);
  int quieted = 0;  // before_capture runs before each capture
  GraphedStep g(graphed.net, graphed.opt, /*eager_steps=*/2, [&] { ++quieted; });
  for (int s = 0; s < steps; ++s) {
    plain_step(plain, d, s);
    graphed_step(graphed, g, d, s);
    // Steps 0-1 eager, 2-4 replayed at lr 0.05; recapture() before step 5 (as the trainer at
    // an epoch's end), 5-8 replayed at 0.02.
    if (s == 4) {
      set_lr(graphed.opt, lr_at(5));
      g.recapture();
    }
    EXPECT_LT(max_state_diff(plain, graphed), 1e-5) << "after step " << s;
  }
  EXPECT_EQ(g.captures(), 2);
  EXPECT_EQ(g.replays(), steps - 2);
  EXPECT_EQ(quieted, 2);
  Rig fresh(dev);
  EXPECT_GT(max_state_diff(plain, fresh, false), 1e-3) << "the steps changed nothing";
  // A replayed forward() gives the model's output (train mode, as the plain forward beside it).
  auto z = g.forward(d.images[0]);
  auto z_plain = normalise(plain.net->forward(d.images[0]));
  EXPECT_LT((z - z_plain).abs().max().item<double>(), 1e-5);
  ctx.setDeterministicCuDNN(det);
  ctx.setBenchmarkCuDNN(bench);
  ctx.setAllowTF32CuDNN(tf32);
  ctx.setAllowTF32CuBLAS(tf32mm);
}
