// Does an encoder + head learn or collapse under the instance loss? Trains on the first N
// Fashion-MNIST training images (ResNet-18 small stem, width 8, batch 128, M 4096, τ 0.2,
// bank momentum 0.5, SGD momentum 0.9, wd 5e-4, constant lr, 1 thread) and prints, every
// 10 steps, the loss, the mean cosine between the batch's embeddings (zcos; 1 = all
// parallel) and between each embedding and its own bank row (z.v_i); after init and every
// epoch, the weighted kNN top-1 of 2,000 test images against the recomputed train features.
// This is the measurement behind docs/ALGORITHM-NOTES.md ("The projection head").
// Usage: bench_head [N 6400] [LR 0.03] [AUGMENT 1|0] [HEAD mlp-bn|mlp|linear] [EPOCHS 3]
#include <invp/core/threads.h>
#include <invp/data/augment.h>
#include <invp/data/dataset.h>
#include <invp/data/loader.h>
#include <invp/eval/weighted_knn.h>
#include <invp/model/encoder.h>
#include <invp/train/invariance_loss.h>
#include <invp/train/memory_bank.h>

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

using namespace invp;

namespace {
torch::Tensor normalise(const torch::Tensor& x) {
  return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1));
}
double mean_cosine(const torch::Tensor& z) { return torch::mm(z, z.t()).mean().item<double>(); }
}  // namespace

int main(int argc, char** argv) {
  apply_thread_budget(1);
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 6400;
  const double lr = argc > 2 ? std::atof(argv[2]) : 0.03;
  const bool augment = argc > 3 ? std::atoi(argv[3]) != 0 : true;
  const std::string head = argc > 4 ? argv[4] : "mlp-bn";
  const int epochs = argc > 5 ? std::atoi(argv[5]) : 3;
  torch::manual_seed(1);
  auto train = data::subset(data::open_dataset("/usr/share/datasets/fashion-mnist:train", {0, false}), 0, size_t(n));
  auto test = data::subset(data::open_dataset("/usr/share/datasets/fashion-mnist:test", {0, false}), 0, 2000);
  model::Encoder net(model::EncoderConfig{18, "small", 8, 1, head, 128});
  const auto aug = data::small_image_preset(28, 1);
  data::LoaderOptions lo;
  lo.batch_size = 128;
  lo.seed = 1;
  lo.augment = augment ? aug : data::eval_config(aug);
  lo.drop_last = true;

  auto features = [&](const std::shared_ptr<data::Dataset>& ds) {
    auto o = lo;
    o.shuffle = o.drop_last = false;
    o.augment = data::eval_config(aug);
    data::Loader loader(ds, o);
    loader.start_epoch(1);
    std::vector<torch::Tensor> f, l;
    torch::NoGradGuard ng;
    net->eval();
    while (auto b = loader.next()) {
      f.push_back(normalise(net->forward(b->images)));
      l.push_back(b->labels);
    }
    net->train();
    return std::make_pair(torch::cat(f), torch::cat(l));
  };
  auto report = [&](const std::string& tag) {
    auto [ftr, ltr] = features(train);
    auto [fte, lte] = features(test);
    auto acc = eval::weighted_knn(ftr, ltr, fte, lte);
    std::printf("%s: kNN top-1 %.3f, |mean embedding| %.3f, mean cosine (eval mode) %.3f\n", tag.c_str(),
                acc.top1, ftr.mean(0).norm().item<double>(), mean_cosine(ftr.slice(0, 0, 500)));
    std::fflush(stdout);
  };

  std::printf("N %lld, lr %g, augment %d, head %s\n", (long long)n, lr, int(augment), head.c_str());
  report("init");
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(lr).momentum(0.9).weight_decay(5e-4));
  train::MemoryBank bank(n, 128, 1);
  train::LossConfig lc;
  lc.use_invariance = false;
  data::Loader loader(train, lo);
  for (int e = 1; e <= epochs; ++e) {
    loader.start_epoch(e);
    for (int step = 0; auto b = loader.next(); ++step) {
      auto z = normalise(net->forward(b->images));
      auto v = bank.data().index_select(0, b->indices);
      auto loss = train::invariance_loss(z, bank.data(), b->indices, torch::Tensor(), 0, lc);
      opt.zero_grad();
      loss.total.backward();
      opt.step();
      auto zd = z.detach();
      if (step % 10 == 0)
        std::printf("epoch %d step %d: loss %.3f zcos %.3f z.v_i %.3f\n", e, step, loss.total.item<double>(),
                    mean_cosine(zd), (zd * v).sum(1).mean().item<double>());
      bank.update(b->indices, zd, 0.5f);
    }
    report("epoch " + std::to_string(e));
  }
  return 0;
}
