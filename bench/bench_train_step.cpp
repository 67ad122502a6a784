// Training-step cost of the real pieces on synthetic data: encoder forward, encoder backward
// + SGD step, and the method side (propagation, loss forward, loss backward, bank update).
// The loss backward is timed on its own by running the loss on a detached copy of z and then
// feeding its gradient into the encoder (same gradients as one backward through both).
//
// Usage: bench_train_step [--threads N] [--steps N] [--warmup N] [--preset paper|cpu|both]
//                         [--bank N] [--batch B] [--denominator reference|paper]
//                         [--propagation bfs|concat] [--graph random|knn]
//                         [--loss-only] [--reps N] [--device cpu|cuda] [--sgd loop|foreach|graph]
//                         [--checkpoint] [--precision fp32|bf16]
//   paper: ResNet-18, small stem, width 64, 3 channels, 32 px, MLP head, D = 128.
//   cpu:   configs/fashion-mnist.toml: ResNet-18, small stem, width 16, 1 channel, 28 px,
//          MLP head, D = 128.
//   Both with B = 128, an N = 60000 bank, M = 4096, k = 4, 3 hops, P = 20, τ = 0.2, the
//   invariance term on (after the warm-up epochs), SGD momentum 0.9, weight decay 5e-4.
//   --graph random (default) draws k random neighbours per node (the propagated sets then
//   have the size of a real graph's); knn builds the exact FAISS graph of the bank (slow).
//   --device cuda runs model, bank and loss on the GPU and waits for it at each phase boundary
//   (as `invp train --profile`), so the phase times are GPU times plus exposed launch cost.
//   --sgd foreach takes train::foreach_sgd_step (multi-tensor kernels; what CUDA training
//   uses) instead of torch::optim::SGD::step (one small kernel per op and parameter); --sgd
//   graph replays the encoder's forward and backward + SGD from CUDA graphs (train::GraphedStep,
//   what `invp train` does on a GPU; eager on the CPU). After the timed steps the same number
//   run again without waiting at the phases: free_step is their mean, the step time a run sees
//   when the host queues work ahead of the GPU.
//   --precision bf16 (cpu) runs the encoder as `invp train --precision bf16` does: bfloat16
//   autocast, channels-last weights and inputs (model/precision.h).
//   --loss-only times invariance_loss alone (forward, forward+backward) for both
//   denominators, median of --reps runs.
//   --checkpoint times an epoch's checkpoint (model + momentum + bank + graph, as the trainer
//   writes it): the training thread's stall before (serialize_checkpoint + serialize_model
//   on it) and now (CheckpointSnapshot::capture), and the serialisation the background thread
//   does now; median of --reps, after one step so the momentum buffers exist. On cuda
//   "capture" is the launch time and "capture+sync" includes the device copies.
#include <invp/core/threads.h>
#include <invp/graph/knn_graph.h>
#include <invp/graph/propagate.h>
#include <invp/model/encoder.h>
#include <invp/model/model_io.h>
#include <invp/model/precision.h>
#include <invp/train/checkpoint.h>
#include <invp/train/graphed_step.h>
#include <invp/train/invariance_loss.h>
#include <invp/train/memory_bank.h>
#include <invp/train/sgd_step.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <vector>

using namespace invp;
using model::normalise_rows;

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Options {
  int threads = 0;
  int steps = 5;
  int warmup = 1;
  std::string preset = "both";
  int64_t bank = 60000;
  int64_t batch = 128;
  std::string denominator = "reference";
  std::string propagation = "bfs";
  std::string graph = "random";
  bool loss_only = false;
  bool checkpoint = false;
  int reps = 15;
  std::string device = "cpu";
  std::string sgd = "loop";
  std::string precision = "fp32";
};

struct Preset {
  std::string name;
  model::EncoderConfig enc;
  int size = 32;
};

Preset make_preset(const std::string& name) {
  Preset p;
  p.name = name;
  p.enc.depth = 18;
  p.enc.stem = "small";
  p.enc.head = "mlp";
  p.enc.dim = 128;
  if (name == "paper") {
    p.enc.width = 64;
    p.enc.in_channels = 3;
    p.size = 32;
  } else {  // configs/fashion-mnist.toml
    p.enc.width = 16;
    p.enc.in_channels = 1;
    p.size = 28;
  }
  p.enc.validate();
  return p;
}

graph::KnnGraph make_graph(const torch::Tensor& bank, int k, const std::string& kind) {
  if (kind == "knn") return graph::KnnGraph::build(bank, k);
  const int64_t n = bank.size(0);
  auto g = graph::KnnGraph::zeros(n, k);
  // Random other nodes: offset 1..n-1 from the node itself, so self is excluded.
  auto off = torch::randint(1, n, {n, k}, torch::kLong);
  g.neighbors = (torch::arange(n, torch::kLong).unsqueeze(1) + off).remainder(n);
  return g;
}

train::LossConfig loss_config(const std::string& denominator) {
  train::LossConfig c;
  c.tau = 0.2f;
  c.background = 4096;
  c.hard_positives = 20;
  c.denominator = denominator == "paper" ? train::Denominator::Paper : train::Denominator::Reference;
  c.use_invariance = true;
  return c;
}

struct StepTimes {
  std::vector<double> forward, backward_opt, propagate, loss_fwd, loss_bwd, bank_update, step;
};

model::Encoder seeded_encoder(const Preset& p, torch::Device dev) {
  torch::manual_seed(1);
  model::Encoder net(p.enc);
  net->to(dev);
  return net;
}

// A preset's encoder (seeded) and its SGD on the bench's device, and a wait for that device.
struct Rig {
  torch::Device dev;
  model::Encoder net;
  torch::optim::SGD opt;
  Rig(const Preset& p, const Options& o)
      : dev(o.device == "cuda" ? torch::kCUDA : torch::kCPU),
        net(seeded_encoder(p, dev)),
        opt(net->parameters(), torch::optim::SGDOptions(0.03).momentum(0.9).weight_decay(5e-4)) {}
  void sync() const {
    if (dev.is_cuda()) torch::cuda::synchronize();
  }
};

void run_preset(const Preset& p, const Options& o) {
  Rig rig(p, o);
  auto& net = rig.net;
  auto& opt = rig.opt;
  const auto dev = rig.dev;
  auto sync = [&] { rig.sync(); };
  net->train();
  const bool bf16 = o.precision == "bf16";
  if (dev.is_cpu() && model::channels_last_pays_in_cpu_training(bf16, p.enc.width))
    model::to_channels_last(*net);  // as the trainer does
  train::MemoryBank bank(o.bank, p.enc.dim, 7);
  bank.data().copy_(normalise_rows(bank.data()));  // a trained bank has unit rows
  auto g = make_graph(bank.data(), 4, o.graph);
  bank.data() = bank.data().to(dev);
  auto mode = o.propagation == "concat" ? graph::PropagationMode::Concat : graph::PropagationMode::Bfs;
  auto cfg = loss_config(o.denominator);
  const int64_t B = o.batch;

  // --sgd graph: the encoder's half replayed from CUDA graphs (train::GraphedStep, as `invp
  // train` on a GPU); on the CPU it runs eagerly.
  std::unique_ptr<train::GraphedStep> graphed;
  if (o.sgd == "graph") graphed = std::make_unique<train::GraphedStep>(net, opt);
  // One step; with `times` it waits for the device at each phase boundary and records them.
  auto one_step = [&](StepTimes* times) {
    // Drawn on the device: a host draw and copy would cost the host more than a GPU step.
    auto images = torch::randn({B, p.enc.in_channels, p.size, p.size}, torch::TensorOptions().device(dev));
    auto indices = torch::randperm(o.bank, torch::kLong).narrow(0, 0, B).contiguous();
    auto ids = indices.to(dev);
    auto phase = [&](Clock::time_point& t0) {
      if (!times) return 0.0;
      sync();
      const double ms = ms_since(t0);
      t0 = Clock::now();
      return ms;
    };
    if (times) sync();
    auto t_step = Clock::now(), t0 = t_step;
    auto z = graphed ? graphed->forward(images)
                     : normalise_rows(model::forward(*net, images, bf16));
    const double fwd = phase(t0);
    auto propagated = graph::propagate(g, indices, 3, mode).to(dev);
    const double prop = phase(t0);
    auto zl = z.detach().requires_grad_(true);
    auto loss = train::invariance_loss(zl, bank.data(), ids, propagated, 0.6, cfg);
    const double lf = phase(t0);
    loss.total.backward();
    const double lb = phase(t0);
    if (graphed) {
      graphed->backward_and_step(zl.grad());
    } else {
      opt.zero_grad();
      z.backward(zl.grad());
      if (!(o.sgd == "foreach" && train::foreach_sgd_step(opt))) opt.step();
    }
    const double bwd = phase(t0);
    bank.update(ids, z.detach(), 0.5f);
    const double bu = phase(t0);
    if (!times) return;
    times->forward.push_back(fwd);
    times->backward_opt.push_back(bwd);
    times->propagate.push_back(prop);
    times->loss_fwd.push_back(lf);
    times->loss_bwd.push_back(lb);
    times->bank_update.push_back(bu);
    times->step.push_back(ms_since(t_step));
  };
  StepTimes t, warm;
  for (int s = 0; s < o.warmup; ++s) one_step(&warm);
  for (int s = 0; s < o.steps; ++s) one_step(&t);
  // Free-running: the same steps without waiting at the phases, as training runs them (on a
  // GPU the host queues work ahead; this is the step time a run sees).
  sync();
  auto t_free = Clock::now();
  for (int s = 0; s < o.steps; ++s) one_step(nullptr);
  sync();
  const double free_step = ms_since(t_free) / o.steps;

  const double f = median(t.forward), b = median(t.backward_opt), pr = median(t.propagate),
               lf = median(t.loss_fwd), lb = median(t.loss_bwd), bu = median(t.bank_update),
               st = median(t.step);
  const double method = pr + lf + lb + bu;
  std::printf("%-6s %4d %5d %9.1f %9.1f %8.1f %8.1f %8.1f %8.1f %8.1f %9.1f %6.1f%% %8.1f %9.1f %8.1f\n",
              p.name.c_str(), thread_budget(), o.steps, f, b, pr, lf, lb, bu, method, st,
              100.0 * (f + b) / st, 1000.0 * double(B) / st, free_step, 1000.0 * double(B) / free_step);
  std::fflush(stdout);
}

void run_loss_only(const Options& o) {
  torch::manual_seed(1);
  const int64_t N = o.bank, B = o.batch, D = 128;
  auto bank = normalise_rows(torch::randn({N, D}));
  auto g = make_graph(bank, 4, "random");
  auto mode = o.propagation == "bfs" ? graph::PropagationMode::Bfs : graph::PropagationMode::Concat;
  std::printf("%-10s %4s %7s %4s %10s %12s %10s\n", "denom", "thr", "prop", "L", "fwd_ms",
              "fwd+bwd_ms", "bwd_ms");
  for (const std::string d : {"reference", "paper"}) {
    auto cfg = loss_config(d);
    std::vector<double> fw, fb;
    int64_t L = 0;
    for (int r = 0; r < o.reps + 2; ++r) {
      auto anchors = torch::randperm(N, torch::kLong).narrow(0, 0, B).contiguous();
      // z near its anchors' bank rows, as after some training.
      auto z = normalise_rows(bank.index_select(0, anchors) + 0.3 * torch::randn({B, D}))
                   .requires_grad_(true);
      auto prop = graph::propagate(g, anchors, 3, mode);
      L = prop.size(1);
      auto t0 = Clock::now();
      {
        auto l = train::invariance_loss(z, bank, anchors, prop, 0.6, cfg);  // forward only
        (void)l.total.item<double>();
      }
      const double a = ms_since(t0);
      t0 = Clock::now();
      auto l = train::invariance_loss(z, bank, anchors, prop, 0.6, cfg);
      l.total.backward();
      (void)l.total.item<double>();
      const double c = ms_since(t0);
      if (r < 2) continue;
      fw.push_back(a);
      fb.push_back(c);
    }
    const double mf = median(fw), mfb = median(fb);
    std::printf("%-10s %4d %7s %4lld %10.1f %12.1f %10.1f\n", d.c_str(), thread_budget(),
                o.propagation.c_str(), static_cast<long long>(L), mf, mfb, mfb - mf);
    std::fflush(stdout);
  }
}

void run_checkpoint(const Preset& p, const Options& o) {
  Rig rig(p, o);
  auto& net = rig.net;
  auto& opt = rig.opt;
  const auto dev = rig.dev;
  net->forward(torch::randn({8, p.enc.in_channels, p.size, p.size}, dev)).pow(2).sum().backward();
  opt.step();
  auto bank = normalise_rows(torch::randn({o.bank, 128}, dev));
  auto graph = make_graph(bank.cpu(), 4, "random").neighbors;
  train::Checkpoint meta{2, 0, "{}", {}, {}};
  train::CheckpointSnapshot snap(p.enc, dev);
  std::vector<double> before, capture, capture_sync, background;
  size_t bytes = 0;
  for (int r = 0; r < o.reps + 1; ++r) {
    rig.sync();
    auto t = Clock::now();
    auto c = train::serialize_checkpoint(meta, *net, opt, bank, graph);
    auto m = model::serialize_model(net);
    const double a = ms_since(t);
    bytes = c.size() + m.size();
    t = Clock::now();
    snap.capture(meta, *net, opt, bank, graph);
    const double b = ms_since(t);
    rig.sync();
    const double b2 = ms_since(t);
    t = Clock::now();
    auto c2 = snap.checkpoint_bytes();
    auto m2 = snap.model_bytes();
    const double w = ms_since(t);
    if (r == 0) continue;  // warm-up: first allocations
    before.push_back(a), capture.push_back(b), capture_sync.push_back(b2), background.push_back(w);
  }
  std::printf("%-6s %4d %6s %9.1f %10.2f %13.2f %11.1f %9.1f\n", p.name.c_str(), thread_budget(), o.device.c_str(),
              median(before), median(capture), median(capture_sync), median(background), double(bytes) / 1e6);
  std::fflush(stdout);
}

int int_arg(int& i, int argc, char** argv) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "bench_train_step: %s needs a value\n", argv[i]);
    std::exit(2);
  }
  return std::atoi(argv[++i]);
}

std::string str_arg(int& i, int argc, char** argv) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "bench_train_step: %s needs a value\n", argv[i]);
    std::exit(2);
  }
  return argv[++i];
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads") o.threads = int_arg(i, argc, argv);
    else if (a == "--steps") o.steps = std::max(1, int_arg(i, argc, argv));
    else if (a == "--warmup") o.warmup = std::max(0, int_arg(i, argc, argv));
    else if (a == "--preset") o.preset = str_arg(i, argc, argv);
    else if (a == "--bank") o.bank = std::max(4097, int_arg(i, argc, argv));
    else if (a == "--batch") o.batch = std::max(1, int_arg(i, argc, argv));
    else if (a == "--denominator") o.denominator = str_arg(i, argc, argv);
    else if (a == "--propagation") o.propagation = str_arg(i, argc, argv);
    else if (a == "--graph") o.graph = str_arg(i, argc, argv);
    else if (a == "--loss-only") o.loss_only = true;
    else if (a == "--checkpoint") o.checkpoint = true;
    else if (a == "--reps") o.reps = std::max(1, int_arg(i, argc, argv));
    else if (a == "--device") o.device = str_arg(i, argc, argv);
    else if (a == "--sgd") o.sgd = str_arg(i, argc, argv);
    else if (a == "--precision") o.precision = str_arg(i, argc, argv);
    else {
      std::fprintf(stderr,
                   "usage: bench_train_step [--threads N] [--steps N] [--warmup N] "
                   "[--preset paper|cpu|both] [--bank N] [--batch B] "
                   "[--denominator reference|paper] [--propagation bfs|concat] "
                   "[--graph random|knn] [--loss-only] [--reps N] [--device cpu|cuda] "
                   "[--sgd loop|foreach|graph] [--checkpoint] [--precision fp32|bf16]\n");
      return 2;
    }
  }
  if (o.preset != "paper" && o.preset != "cpu" && o.preset != "both") {
    std::fprintf(stderr, "bench_train_step: --preset must be paper, cpu or both\n");
    return 2;
  }
  if ((o.device != "cpu" && o.device != "cuda") || (o.sgd != "loop" && o.sgd != "foreach" && o.sgd != "graph")) {
    std::fprintf(stderr, "bench_train_step: --device must be cpu or cuda, --sgd loop, foreach or graph\n");
    return 2;
  }
  if ((o.precision != "fp32" && o.precision != "bf16") || (o.precision == "bf16" && o.device != "cpu")) {
    std::fprintf(stderr, "bench_train_step: --precision must be fp32, or bf16 with --device cpu\n");
    return 2;
  }
  if (o.device == "cuda" && !torch::cuda::is_available()) {
    std::fprintf(stderr, "bench_train_step: --device cuda: no CUDA device or this LibTorch has no CUDA\n");
    return 2;
  }
  apply_thread_budget(resolve_thread_budget(o.threads));
  std::printf("# %s\n", thread_report().c_str());
  try {
    if (o.loss_only) {
      std::printf("# invariance_loss alone: B=%lld N=%lld D=128 M=4096 P=20, median of %d\n",
                  static_cast<long long>(o.batch), static_cast<long long>(o.bank), o.reps);
      run_loss_only(o);
      return 0;
    }
    if (o.checkpoint) {
      std::printf("# epoch checkpoint, N=%lld bank rows; ms on the training thread before (serialise) and "
                  "now (capture), ms of serialisation now in the background; median of %d\n",
                  static_cast<long long>(o.bank), o.reps);
      std::printf("%-6s %4s %6s %9s %10s %13s %11s %9s\n", "preset", "thr", "device", "before", "capture",
                  "capture+sync", "background", "MB");
      if (o.preset == "paper" || o.preset == "both") run_checkpoint(make_preset("paper"), o);
      if (o.preset == "cpu" || o.preset == "both") run_checkpoint(make_preset("cpu"), o);
      return 0;
    }
    std::printf("# B=%lld N=%lld M=4096 k=4 hops=3 P=20 denominator=%s propagation=%s graph=%s; "
                "device=%s sgd=%s precision=%s; medians over %d steps after %d warm-up; times in ms per step\n",
                static_cast<long long>(o.batch), static_cast<long long>(o.bank),
                o.denominator.c_str(), o.propagation.c_str(), o.graph.c_str(), o.device.c_str(),
                o.sgd.c_str(), o.precision.c_str(), o.steps, o.warmup);
    std::printf("# method = propagate + loss fwd + loss bwd + bank update; "
                "fwd+bwd%% = (forward + backward/opt) / step\n");
    std::printf("%-6s %4s %5s %9s %9s %8s %8s %8s %8s %8s %9s %7s %8s %9s %8s\n", "preset", "thr",
                "steps", "forward", "bwd+opt", "propag", "loss_f", "loss_b", "bank_up",
                "method", "step", "fwd+bwd", "img/s", "free_step", "img/s");
    if (o.preset == "paper" || o.preset == "both") run_preset(make_preset("paper"), o);
    if (o.preset == "cpu" || o.preset == "both") run_preset(make_preset("cpu"), o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
