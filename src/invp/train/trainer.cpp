#include <invp/core/atomic_file.h>
#include <invp/core/background_job.h>
#include <invp/core/clock.h>
#include <invp/core/cpu_features.h>
#include <invp/core/error.h>
#include <invp/core/lock_file.h>
#include <invp/core/log.h>
#include <invp/core/progress.h>
#include <invp/data/loader.h>
#include <invp/eval/weighted_knn.h>
#include <invp/graph/knn_graph.h>
#include <invp/graph/propagate.h>
#include <invp/model/encoder.h>
#include <invp/model/model_io.h>
#include <invp/model/precision.h>
#include <invp/train/checkpoint.h>
#include <invp/train/graphed_step.h>
#include <invp/train/invariance_loss.h>
#include <invp/train/memory_bank.h>
#include <invp/train/schedule.h>
#include <invp/train/sgd_step.h>
#include <invp/train/trainer.h>

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace invp::train {
using model::normalise_rows;
namespace fs = std::filesystem;
namespace {
std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop = true; }
// SIGINT/SIGTERM set g_stop while a run is in progress; the old handlers come back however
// the run ends.
struct StopOnSignals {
  using Handler = void (*)(int);
  Handler old_int = std::signal(SIGINT, on_signal), old_term = std::signal(SIGTERM, on_signal);
  ~StopOnSignals() {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
  }
};

std::string metrics_line(const EpochMetrics& m) {
  nlohmann::json j{{"epoch", m.epoch}, {"loss", m.loss}, {"loss_ins", m.instance},
                   {"loss_inv", m.invariance}, {"lr", m.lr}, {"omega", m.omega},
                   {"seconds", m.seconds}, {"images_per_second", m.images_per_second},
                   {"time", {{"data_wait", m.data_wait}, {"forward", m.forward},
                             {"backward", m.backward}, {"bank_graph_loss", m.method},
                             {"checkpoint", m.checkpoint}, {"checkpoint_write", m.checkpoint_write}}},
                   {"graph", {{"build_seconds", m.graph_seconds}, {"features_seconds", m.graph_features_seconds},
                              {"mean_similarity", m.graph_mean_similarity},
                              {"mutual_share", m.graph_mutual}}},
                   {"skipped_bad", m.skipped_bad}};
  if (m.graph_same_label >= 0) j["graph"]["same_label_share"] = m.graph_same_label;
  if (m.knn_top1 >= 0) j["knn"] = {{"top1", m.knn_top1}, {"top5", m.knn_top5}, {"features", "bank"}};
  return j.dump() + "\n";
}
}  // namespace

bool stop_requested() { return g_stop; }

struct Trainer::State {
  std::unique_ptr<DirLock> lock;  // one trainer per run directory
  TrainConfig cfg;
  std::string out;
  std::shared_ptr<data::Dataset> ds, test_ds;
  model::ModelInfo info;
  model::Encoder net{nullptr};
  std::unique_ptr<torch::optim::SGD> opt;
  std::unique_ptr<MemoryBank> bank;
  graph::KnnGraph graph;
  torch::Tensor labels;  // N int64 (−1 unknown), for monitoring only
  int epoch = 1;         // epoch in progress / next to run
  int64_t step = 0;      // loader batches of `epoch` already consumed (= steps, unless all-bad batches were skipped)
  torch::Device device{torch::kCPU};  // model, bank and loss; the graph's lists stay on the host
  LossConfig loss_cfg;
  data::LoaderOptions loader_opts;
};

namespace {
// Runs the model (eval mode, no gradients) over every item of ds under the eval transform and
// hands each batch to `take` with its normalised features, on the training device; `bf16`: the
// forward under CPU bfloat16 autocast (model/precision.h). The model is left in eval mode.
void for_each_eval_batch(model::Encoder& net, const data::LoaderOptions& train_opts, torch::Device device,
                         bool bf16, const std::shared_ptr<data::Dataset>& ds,
                         const std::function<void(const data::Batch&, const torch::Tensor&)>& take) {
  net->eval();
  torch::NoGradGuard ng;
  auto lo = train_opts;
  lo.shuffle = false;
  lo.drop_last = false;
  lo.augment = data::eval_config(train_opts.augment);
  data::Loader loader(ds, lo);
  loader.start_epoch(1);
  while (auto b = loader.next())
    take(*b, normalise_rows(model::forward(*net, b->images.to(device, true), bf16)));
}
}  // namespace

Trainer::Trainer(TrainConfig cfg, std::string out_dir, bool force) : s_(std::make_unique<State>()) {
  cfg.validate();
  if (cfg.device == "cuda" && !torch::cuda::is_available())
    throw Error("", "--device cuda: no CUDA device or this LibTorch has no CUDA", "use --device cpu");
  auto& s = *s_;
  cfg.precision = cfg.resolved_precision();  // config.json records what the run uses
  s.cfg = cfg;
  s.out = out_dir;
  s.ds = data::open_dataset(cfg.data, {cfg.channels, false});
  if (cfg.limit > 0 && size_t(cfg.limit) < s.ds->size()) s.ds = data::subset(s.ds, 0, size_t(cfg.limit));
  if (!cfg.test_data.empty()) s.test_ds = data::open_dataset(cfg.test_data, {s.ds->channels(), false});
  int64_t n = int64_t(s.ds->size());
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = s.ds->label(size_t(i));
  s.labels = torch::tensor(labels, torch::kLong);
  if (cfg.positives == "oracle" && (n == 0 || s.labels.min().item<int64_t>() < 0))
    throw Error(cfg.data, "--positives oracle needs every training item labelled",
                "use a labelled source, or --positives graph");
  // Only now, with the data known good, does OUT come into being: a refused run leaves nothing.
  fs::create_directories(out_dir);
  s.lock = std::make_unique<DirLock>(out_dir);
  for (auto name : {"checkpoint.pt", "model.pt", "model.json", "config.json"})  // a killed run's
    remove_leftover_temp_files((fs::path(out_dir) / name).string());

  torch::manual_seed(cfg.seed);
  s.info.encoder = {cfg.arch_depth, cfg.stem, cfg.width, s.ds->channels(), cfg.head, cfg.dim};
  s.info.input_size = cfg.input_size;
  s.info.resize = cfg.input_size;
  s.info.config_hash = cfg.config_hash();
  auto aug = data::small_image_preset(cfg.input_size, s.ds->channels());
  aug.scale_min = cfg.crop_scale;
  aug.flip_p = cfg.flip;
  s.info.mean = aug.mean;
  s.info.std = aug.std;
  s.device = torch::Device(cfg.device == "cuda" ? torch::kCUDA : torch::kCPU);
  if (s.device.is_cuda()) {
    auto& ctx = at::globalContext();
    ctx.setAllowTF32CuDNN(cfg.precision == "tf32");
    ctx.setAllowTF32CuBLAS(cfg.precision == "tf32");  // the graph build keeps float32 (knn_graph.cpp)
    ctx.setBenchmarkCuDNN(true);  // fixed shapes (drop_last): cuDNN times its algorithms once
  }
  s.net = model::Encoder(s.info.encoder);
  s.net->to(s.device);
  s.opt = std::make_unique<torch::optim::SGD>(
      s.net->parameters(),
      torch::optim::SGDOptions(cfg.lr).momentum(cfg.momentum).weight_decay(cfg.weight_decay));
  s.bank = std::make_unique<MemoryBank>(n, cfg.dim, cfg.seed);
  s.bank->data() = s.bank->data().to(s.device);
  s.graph = graph::KnnGraph::zeros(n, cfg.knn);
  s.loss_cfg.tau = cfg.tau;
  s.loss_cfg.background = cfg.background;
  s.loss_cfg.hard_positives = cfg.hard_positives;
  s.loss_cfg.denominator = cfg.denominator == "paper" ? Denominator::Paper : Denominator::Reference;
  s.loss_cfg.use_invariance = cfg.loss == "invp";
  s.loader_opts.batch_size = cfg.batch_size;
  s.loader_opts.workers = std::max(1, cfg.workers);
  s.loader_opts.seed = cfg.seed;
  s.loader_opts.augment = aug;
  s.loader_opts.drop_last = true;  // BatchNorm and the loss want full batches; reported in the log
  s.loader_opts.pin_memory = s.device.is_cuda();  // so the copy below can overlap

  auto ckpt = (fs::path(out_dir) / "checkpoint.pt").string();
  if (fs::exists(ckpt)) {
    Checkpoint c = read_checkpoint(ckpt);
    auto old = TrainConfig::from_json(c.config_json, ckpt);
    if (old.config_hash() != cfg.config_hash() && !force)
      throw Error(ckpt, "checkpoint was made with a different training config",
                  "use the same config, another --out, or --force to continue anyway");
    load_checkpoint_into(c, *s.net, *s.opt, s.bank->data(), s.graph.neighbors);
    s.epoch = c.epoch;
    s.step = c.step;
    log::info("resuming " + out_dir + " at epoch " + std::to_string(s.epoch) +
              (s.step ? ", step " + std::to_string(s.step) : ""));
  }
  // Channels-last weights where that is faster on the CPU. After any checkpoint was loaded, so
  // that a resumed run uses the same convolution kernels as an uninterrupted one.
  if (s.device.is_cpu() && model::channels_last_pays_in_cpu_training(cfg.precision == "bf16", cfg.width))
    model::to_channels_last(*s.net);
  log::info("precision " + cfg.precision + (cfg.precision == "bf16" ? " (CPU bfloat16: " + cpu_bf16_report() + ")" : ""));
  write_file_atomically((fs::path(out_dir) / "config.json").string(), cfg.to_json() + "\n");
}

Trainer::~Trainer() = default;
int Trainer::start_epoch() const { return s_->epoch; }

int Trainer::run(const std::function<void(const EpochMetrics&)>& on_epoch, int until_epoch,
                 int64_t max_steps) {
  auto& s = *s_;
  const auto& cfg = s.cfg;
  g_stop = false;
  StopOnSignals signals;
  auto ckpt = (fs::path(s.out) / "checkpoint.pt").string();
  auto model_pt = (fs::path(s.out) / "model.pt").string();
  auto metrics_jsonl = (fs::path(s.out) / "metrics.jsonl").string();
  // An epoch's state is copied here into `snap` (device-side copies: a consistent snapshot in
  // milliseconds) and serialised and written by `writer` while the next epoch trains: model.pt +
  // model.json, checkpoint.pt, then the epoch's metrics line, so a line in metrics.jsonl means
  // its checkpoint is on disk.
  CheckpointSnapshot snap(s.info.encoder, s.device);
  BackgroundJob writer;
  auto set_lr = [&](double lr) {
    for (auto& g : s.opt->param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
  };
  std::unique_ptr<GraphedStep> graphed;  // made below, once the device is known
  auto save_epoch = [&](EpochMetrics m) {
    auto t = std::chrono::steady_clock::now();
    writer.wait();  // the previous epoch's files (so `snap` is free); rethrows their write error
    // The CUDA graphs for the next epoch's learning rate are captured now, while the writer is
    // idle: its device-to-host copies must not overlap a capture.
    if (graphed && s.epoch <= cfg.epochs) {
      set_lr(learning_rate(cfg.lr, s.epoch, cfg.epochs, cfg.schedule));
      s.net->train();
      graphed->recapture();
    }
    snap.capture({s.epoch, s.step, cfg.to_json()}, *s.net, *s.opt, s.bank->data(), s.graph.neighbors);
    m.checkpoint = seconds_since(t);
    writer.submit([&, m]() mutable {
      auto t_write = std::chrono::steady_clock::now();
      // model.pt first: a run killed between the two redoes the epoch from the older
      // checkpoint and rewrites model.pt, while the other order could leave a finished run
      // with the previous epoch's model.pt.
      model::save_model_bytes(snap.model_bytes(), s.info, model_pt);
      write_file_atomically(ckpt, snap.checkpoint_bytes());
      m.checkpoint_write = seconds_since(t_write);
      std::ofstream(metrics_jsonl, std::ios::app) << metrics_line(m);
    });
    return m;
  };
  data::Loader loader(s.ds, s.loader_opts);
  auto mode = cfg.propagation == "concat" ? graph::PropagationMode::Concat : graph::PropagationMode::Bfs;
  int last_done = s.epoch - 1;
  int64_t steps_this_call = 0;
  // On a GPU the step queues work without waiting for it (no .item(), no blocking copies), so
  // host-side phase times are launch times; --profile waits at each phase boundary instead.
  const bool cuda = s.device.is_cuda();
  auto phase_end = [&] {
    if (cuda && cfg.profile) torch::cuda::synchronize();
  };
  // Host tensors the step sends to the device: pinned, so the copy is queued, not waited for.
  auto pinned = [](const torch::Tensor& t) { return t.is_pinned() ? t : t.pin_memory(); };
  auto to_device = [&](const torch::Tensor& t) {
    return cuda ? pinned(t).to(s.device, /*non_blocking=*/true) : t;
  };
  // The encoder's forward of a step: unit rows, float32 whatever the precision.
  const bool bf16 = cfg.precision == "bf16";
  auto encode = [&](const torch::Tensor& images) {
    return normalise_rows(model::forward(*s.net, to_device(images), bf16));
  };
  // On a GPU the encoder's half of the step is replayed from CUDA graphs (graphed_step.h); the
  // method's half stays eager. Created here, after any checkpoint was loaded into the model.
  // The checkpoint writer's device-to-host copies must not run during the capture.
  if (cuda && cfg.cuda_graph == "on" && cuda_graphs_built())
    graphed = std::make_unique<GraphedStep>(s.net, *s.opt, 2, [&] { writer.wait(); });
  int last = until_epoch > 0 ? std::min(until_epoch, cfg.epochs) : cfg.epochs;
  for (; s.epoch <= last && !g_stop; ) {
    EpochMetrics m;
    m.epoch = s.epoch;
    auto t_epoch = std::chrono::steady_clock::now();
    m.lr = learning_rate(cfg.lr, s.epoch, cfg.epochs, cfg.schedule);
    set_lr(m.lr);
    m.omega = ramp_weight(s.epoch, cfg.warmup, cfg.ramp == "gaussian");
    double inv_weight = cfg.lambda * m.omega;
    LossConfig step_loss = s.loss_cfg;  // L_inv is skipped entirely while its weight is 0
    step_loss.use_invariance = s.loss_cfg.use_invariance && inv_weight > 0;
    if (cfg.graph == "epoch" && s.step == 0) {
      auto rows = s.bank->data();
      if (cfg.graph_features == "recomputed" && step_loss.use_invariance) {  // the graph is unused before
        auto t = std::chrono::steady_clock::now();
        rows = rows.clone();  // an item the loader skips keeps its bank row
        // Part of the training arithmetic: in the run's precision (the monitor below is not).
        for_each_eval_batch(s.net, s.loader_opts, s.device, bf16, s.ds, [&](const data::Batch& b, const torch::Tensor& z) {
          rows.index_copy_(0, b.indices.to(s.device), z);
        });
        m.graph_features_seconds = seconds_since(t);
      }
      auto t = std::chrono::steady_clock::now();
      s.graph = cfg.graph_search == "ivf" ? graph::KnnGraph::build_ivf(rows, cfg.knn, cfg.graph_probes, cfg.seed)
                                          : graph::KnnGraph::build(rows, cfg.knn);
      m.graph_seconds = seconds_since(t);
      auto st = s.graph.stats(s.labels);
      m.graph_mean_similarity = st.mean_similarity;
      m.graph_mutual = st.mutual_share;
      m.graph_same_label = st.same_label_share;
    }
    s.net->train();
    loader.start_epoch(s.epoch, size_t(s.step));  // s.step > 0: resume inside the epoch
    Progress bar("epoch " + std::to_string(s.epoch), int64_t(loader.batches_per_epoch()));
    int64_t images = 0, steps = 0;
    // Loss sums (total, L_ins, L_inv; each batch's mean × its size) accumulate where the loss
    // is, in one tensor: read once an epoch.
    auto sums = torch::zeros({3}, torch::TensorOptions(torch::kDouble).device(s.device));
    while (!g_stop) {
      auto t0 = std::chrono::steady_clock::now();
      auto batch = loader.next();
      m.data_wait += seconds_since(t0);
      if (!batch) break;
      auto t1 = std::chrono::steady_clock::now();
      auto ids = to_device(batch->indices);
      // The graphed step takes the pinned batch itself (one copy into its static input).
      auto z = graphed ? graphed->forward(pinned(batch->images))  // graphed: CUDA only
                       : encode(batch->images);
      auto zl = graphed ? z.detach().requires_grad_(true) : z;  // the loss's leaf when graphed
      phase_end();
      m.forward += seconds_since(t1);
      auto t2 = std::chrono::steady_clock::now();
      torch::Tensor propagated;  // built on the host from the host-side graph
      if (step_loss.use_invariance)
        propagated = graph::propagate(s.graph, batch->indices, cfg.hops, mode);
      if (propagated.defined() && cfg.positives == "oracle")
        propagated = graph::keep_same_label(propagated, batch->indices, s.labels);
      if (propagated.defined()) propagated = to_device(propagated);
      auto loss = invariance_loss(zl, s.bank->data(), ids, propagated, inv_weight, step_loss);
      phase_end();
      m.method += seconds_since(t2);
      auto t3 = std::chrono::steady_clock::now();
      if (graphed) {
        graphed->backward_and_step(torch::autograd::grad({loss.total}, {zl})[0]);
      } else {
        s.opt->zero_grad();
        loss.total.backward();
        if (!(cuda && foreach_sgd_step(*s.opt))) s.opt->step();  // the GPU takes the fused step
      }
      phase_end();
      m.backward += seconds_since(t3);
      auto t4 = std::chrono::steady_clock::now();
      auto zd = z.detach();
      if (cfg.graph == "online") {  // reference: batch rows of the graph from this step's top-k
        auto sims = torch::mm(zd, s.bank->data().t());
        sims.scatter_(1, ids.unsqueeze(1), -1e9);  // self excluded
        s.graph.update_rows(batch->indices, std::get<1>(sims.topk(cfg.knn, 1)));
      }
      s.bank->update(ids, zd, cfg.bank_momentum);
      const double n = double(batch->indices.size(0));
      sums += torch::stack({loss.total, loss.instance, loss.invariance}).detach().to(torch::kDouble) * n;
      phase_end();
      m.method += seconds_since(t4);
      images += int64_t(n);
      s.step = int64_t(loader.position());
      bar.update(++steps);
      if (max_steps > 0 && ++steps_this_call >= max_steps) g_stop = true;
    }
    bar.finish();
    if (g_stop) break;  // the checkpoint below is written with the partial epoch position
    auto sum = sums.cpu();  // waits for the GPU
    m.loss = sum[0].item<double>(), m.instance = sum[1].item<double>(), m.invariance = sum[2].item<double>();
    if (images > 0) m.loss /= images, m.instance /= images, m.invariance /= images;
    m.seconds = seconds_since(t_epoch);
    m.images_per_second = images / std::max(1e-9, m.seconds);
    m.skipped_bad = int64_t(loader.bad_count());
    if (s.test_ds && cfg.knn_every > 0 && s.epoch % cfg.knn_every == 0 && s.labels.max().item<int64_t>() >= 0) {
      std::vector<torch::Tensor> feats, labs;
      for_each_eval_batch(s.net, s.loader_opts, s.device, /*bf16=*/false, s.test_ds, [&](const data::Batch& b, const torch::Tensor& z) {
        feats.push_back(z);
        labs.push_back(b.labels);
      });
      auto acc = eval::weighted_knn(s.bank->data().cpu(), s.labels, torch::cat(feats).cpu(),
                                    torch::cat(labs));
      m.knn_top1 = acc.top1;
      m.knn_top5 = acc.top5;
    }
    last_done = s.epoch;
    ++s.epoch;
    s.step = 0;
    m = save_epoch(m);
    if (on_epoch) on_epoch(m);
  }
  writer.wait();  // every epoch's files are on disk before run() returns
  if (g_stop) {
    write_checkpoint(ckpt, {s.epoch, s.step, cfg.to_json()}, *s.net, *s.opt, s.bank->data(), s.graph.neighbors);
    log::info("interrupted: checkpoint written at epoch " + std::to_string(s.epoch) + ", step " +
              std::to_string(s.step) + "; rerun the same command to resume");
  }
  return last_done;
}

}  // namespace invp::train
