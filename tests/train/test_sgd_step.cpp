// foreach_sgd_step against torch::optim::SGD itself: the same parameters and momentum buffers
// after several steps, bitwise (on the CPU both run the same per-tensor kernels).
#include <invp/train/sgd_step.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

namespace {
std::vector<torch::Tensor> make_params(int64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> ps;
  for (auto shape : std::vector<std::vector<int64_t>>{{7, 5}, {5}, {3, 3, 2}, {1}})
    ps.push_back(torch::randn(shape).requires_grad_(true));
  return ps;
}

void set_grads(std::vector<torch::Tensor>& ps, int step) {
  torch::manual_seed(100 + step);
  for (size_t i = 0; i < ps.size(); ++i) {
    if (step == 2 && i == 1) {  // a parameter without a gradient this step is left alone
      ps[i].mutable_grad() = torch::Tensor();
      continue;
    }
    ps[i].mutable_grad() = torch::randn(ps[i].sizes());
  }
}
}  // namespace

TEST(ForeachSgd, MatchesTorchSgdBitwise) {
  for (double wd : {0.0, 5e-4}) {
    for (double damp : {0.0, 0.1}) {
      auto a = make_params(3), b = make_params(3);
      auto opts = torch::optim::SGDOptions(0.03).momentum(0.9).weight_decay(wd).dampening(damp);
      torch::optim::SGD ref(a, opts), fast(b, opts);
      for (int step = 0; step < 5; ++step) {
        set_grads(a, step);
        set_grads(b, step);
        ref.step();
        const bool fused = invp::train::foreach_sgd_step(fast);
        EXPECT_EQ(fused, step > 0) << "the first step has no momentum buffers yet";
        if (!fused) fast.step();
      }
      for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_TRUE(torch::equal(a[i], b[i])) << "param " << i << " wd " << wd << " dampening " << damp;
        EXPECT_FALSE(torch::equal(a[i], make_params(3)[i])) << "param " << i << " never moved";
      }
      // The optimiser's own buffers were the ones updated: a checkpoint sees the same state.
      torch::serialize::OutputArchive ra, fa;
      ref.save(ra);
      fast.save(fa);
      std::ostringstream rs, fs;
      ra.save_to(rs);
      fa.save_to(fs);
      EXPECT_EQ(rs.str().size(), fs.str().size());
    }
  }
}

TEST(ForeachSgd, DeclinesNesterovAndNoMomentum) {
  auto p = make_params(1);
  torch::optim::SGD nesterov(p, torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true));
  set_grads(p, 0);
  nesterov.step();
  set_grads(p, 1);
  auto before = p[0].clone();
  EXPECT_FALSE(invp::train::foreach_sgd_step(nesterov));
  EXPECT_TRUE(torch::equal(before, p[0]));  // declined: nothing changed
  torch::optim::SGD plain(p, torch::optim::SGDOptions(0.1));
  EXPECT_FALSE(invp::train::foreach_sgd_step(plain));
}

// The overload a CUDA graph captures takes the gradients as a list (p.grad() stays unset): the
// same step, bitwise, as reading them from p.grad(); a list of the wrong length changes nothing.
TEST(ForeachSgd, GivenGradientsMatchTheGradFields) {
  auto a = make_params(5), b = make_params(5);
  auto opts = torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4);
  torch::optim::SGD ref(a, opts), given(b, opts);
  for (int step = 0; step < 4; ++step) {
    set_grads(a, step);
    std::vector<torch::Tensor> grads;
    for (auto& p : a) grads.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
    if (step == 0) {  // no momentum buffers yet: declined, then both take torch's first step
      EXPECT_FALSE(invp::train::foreach_sgd_step(given, grads));
      for (size_t i = 0; i < b.size(); ++i) b[i].mutable_grad() = grads[i];
      ref.step();
      given.step();
      for (auto& p : b) p.mutable_grad() = torch::Tensor();
      continue;
    }
    ASSERT_TRUE(invp::train::foreach_sgd_step(ref));
    auto before = b[0].clone();
    std::vector<torch::Tensor> short_list(grads.begin(), grads.end() - 1);
    EXPECT_FALSE(invp::train::foreach_sgd_step(given, short_list));
    EXPECT_TRUE(torch::equal(before, b[0]));
    ASSERT_TRUE(invp::train::foreach_sgd_step(given, grads));
    for (auto& p : b) EXPECT_FALSE(p.grad().defined());
  }
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i], b[i])) << "param " << i;
    EXPECT_FALSE(torch::equal(a[i], make_params(5)[i])) << "param " << i << " never moved";
  }
}
