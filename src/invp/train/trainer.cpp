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
#include <invp/model/batch_norm.h>
#include <invp/model/encoder.h>
#include <invp/model/model_io.h>
#include <invp/model/precision.h>
#include <invp/train/checkpoint.h>
#include <invp/train/distributed.h>
#include <invp/train/graphed_step.h>
#include <invp/train/invariance_loss.h>
#include <invp/train/memory_bank.h>
#include <invp/train/schedule.h>
#include <invp/train/sgd_step.h>
#include <invp/train/trainer.h>
#include <invp/train/trainer_state.h>

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
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
  if (!m.state_hash.empty())
    j["dist"] = {{"allreduce_seconds", m.allreduce}, {"allgather_seconds", m.allgather},
                 {"bytes", m.comm_bytes}, {"state_hash", m.state_hash},
                 {"grad_buckets", m.grad_buckets}, {"buckets_in_backward", m.buckets_in_backward}};
  return j.dump() + "\n";
}
}  // namespace

bool stop_requested() { return g_stop; }

namespace {
std::string read_file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "cannot read the checkpoint");
  return std::string(std::istreambuf_iterator<char>(f), {});
}

double comm_bytes(const DistGroup& d) {
  const auto& c = d.stats();
  return c.allreduce_bytes + c.allgather_bytes + c.broadcast_bytes;
}

// The GPU of this rank: LOCAL_RANK among the machine's devices.
int dist_local_device() {
  auto env = rank_env_from_environment();
  const int n = int(torch::cuda::device_count());
  return n > 0 ? env.local_rank % n : 0;
}

// Refuses a data-parallel start whose ranks disagree on what they train: the config hash and
// the data's size, all-gathered and compared with rank 0's, so every rank refuses together.
void check_ranks_agree(DistGroup& dist, const TrainConfig& cfg, int64_t n) {
  std::string mine = cfg.config_hash() + ":" + std::to_string(n);
  mine.resize(64, ' ');
  auto t = torch::from_blob(mine.data(), {1, 64}, torch::kUInt8).clone();
  auto all = dist.all_gather(t);
  for (int r = 1; r < dist.world(); ++r)
    if (!torch::equal(all[r], all[0]))
      throw Error("", "rank " + std::to_string(r) + " was started with a different training config or data than rank 0",
                  "start every rank with the same command and data");
}

// The progress bar's note: the epoch's running loss and the time left in the whole run.
std::string progress_note(const torch::Tensor& sums, int64_t images, const std::vector<double>& epoch_seconds,
                          int epochs_after, double epoch_elapsed, double epoch_fraction) {
  char b[96];
  const double loss = images > 0 ? sums[0].item<double>() / double(images) : 0;
  double per_epoch = epoch_fraction > 0 ? epoch_elapsed / epoch_fraction : -1;
  if (!epoch_seconds.empty()) per_epoch = epoch_seconds.back();
  const double left = per_epoch * (1 - epoch_fraction) + per_epoch * epochs_after;
  std::snprintf(b, sizeof b, "loss %.4f  run %s left", loss, format_duration(per_epoch >= 0 ? left : -1).c_str());
  return b;
}

// The highest kNN top-1 in a run's metrics.jsonl (-1 without any): best.pt's figure to beat.
double best_knn_top1_logged(const std::string& metrics_jsonl) {
  double best = -1;
  std::ifstream in(metrics_jsonl);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("knn")) best = std::max(best, j["knn"].value("top1", -1.0));
  }
  return best;
}

void set_lr(torch::optim::SGD& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
}
}  // namespace

Trainer::Trainer(TrainConfig cfg, std::string out_dir, bool force, std::shared_ptr<DistGroup> dist)
    : s_(std::make_unique<State>()) {
  auto& s = *s_;
  s.modes = cfg.modes();
  if (s.modes.cuda && !torch::cuda::is_available())
    throw Error("", "--device cuda: no CUDA device or this LibTorch has no CUDA", "use --device cpu");
  cfg.precision = cfg.resolved_precision();  // config.json records what the run uses
  cfg.world_size = dist ? dist->world() : 1;
  s.dist = dist;
  s.cfg = cfg;
  s.out = out_dir;
  s.bf16 = cfg.precision == "bf16";
  const int local_batch = dist ? per_rank_batch(cfg.batch_size, dist->world()) : cfg.batch_size;
  s.ds = data::open_dataset(cfg.data, {cfg.channels, false});
  if (cfg.limit > 0 && size_t(cfg.limit) < s.ds->size()) s.ds = data::subset(s.ds, 0, size_t(cfg.limit));
  if (!cfg.test_data.empty()) s.test_ds = data::open_dataset(cfg.test_data, {s.ds->channels(), false});
  int64_t n = int64_t(s.ds->size());
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = s.ds->label(size_t(i));
  s.labels = torch::tensor(labels, torch::kLong);
  if (s.modes.positives == Positives::Oracle && (n == 0 || s.labels.min().item<int64_t>() < 0))
    throw Error(cfg.data, "--positives oracle needs every training item labelled",
                "use a labelled source, or --positives graph");
  if (dist && dist->world() > 1 && cfg.keep_last_batch)
    throw Error("", "--keep-last-batch works on one rank only: the last partial global batch cannot be split "
                "evenly over " + std::to_string(dist->world()) + " ranks",
                "drop --keep-last-batch, or train without --nproc");
  if (dist) check_ranks_agree(*dist, cfg, n);
  // Only now, with the data known good, does OUT come into being: a refused run leaves nothing.
  if (s.lead()) {
    fs::create_directories(out_dir);
    s.lock = std::make_unique<DirLock>(out_dir);
    for (auto name : {"checkpoint.pt", "model.pt", "model.json", "config.json"})  // a killed run's
      remove_leftover_temp_files((fs::path(out_dir) / name).string());
  }

  torch::manual_seed(cfg.seed);
  s.info.encoder = {cfg.arch_depth, cfg.stem, cfg.width, s.ds->channels(), cfg.head, cfg.dim};
  s.info.input_size = cfg.input_size;
  s.info.config_hash = cfg.config_hash();
  const auto aug = cfg.augment_config(s.ds->channels());
  // The eval transform embed and query use: resize the shorter side to size / ratio (256 for
  // 224 under imagenet), then centre-crop size.
  s.info.resize = int(std::lround(cfg.input_size / aug.resize_ratio));
  s.info.augment = cfg.augment_json(s.ds->channels());
  s.info.features = cfg.embed_features;
  s.info.mean = aug.mean;
  s.info.std = aug.std;
  s.device = torch::Device(s.modes.cuda ? torch::kCUDA : torch::kCPU, s.modes.cuda && dist ? dist_local_device() : -1);
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
  s.loss_cfg.denominator = s.modes.paper_denominator ? Denominator::Paper
                           : s.modes.plain_denominator ? Denominator::Plain
                                                       : Denominator::Reference;
  s.loss_cfg.easiest_positives = s.modes.easiest_positives;
  s.loss_cfg.use_invariance = s.modes.loss == LossKind::Invp;
  s.loader_opts.batch_size = local_batch;
  s.loader_opts.shard = dist ? dist->rank() : 0;
  s.loader_opts.shards = dist ? dist->world() : 1;
  s.loader_opts.workers = std::max(1, cfg.workers);
  s.loader_opts.seed = cfg.seed;
  s.loader_opts.augment = aug;
  // Full batches only, unless --keep-last-batch (then a one-item remainder is skipped in run()).
  s.loader_opts.drop_last = !cfg.keep_last_batch;
  s.loader_opts.pin_memory = s.device.is_cuda();  // so the copy below can overlap

  // Resume: rank 0 reads the checkpoint and every rank loads the same bytes (no shared disk).
  auto ckpt = (fs::path(out_dir) / "checkpoint.pt").string();
  std::string bytes;
  if (s.lead() && fs::exists(ckpt)) bytes = read_file_bytes(ckpt);
  if (dist) dist->broadcast_bytes(bytes);
  if (!bytes.empty()) {
    Checkpoint c = read_checkpoint(ckpt, std::move(bytes));
    auto old = TrainConfig::from_json(c.config_json, ckpt);
    // A run begun on the first cosine curve finishes on it: switching mid-run would jump the
    // rate and the run would match neither curve. Said, not silent.
    if (old.lr_curve != cfg.lr_curve && cfg.schedule == "cosine") {
      if (s.lead())
        log::warn(ckpt + " was written with invp's earlier cosine curve (last epoch at rate 0); this run "
                  "finishes on it. A new --out trains on the reference's curve");
      cfg.lr_curve = old.lr_curve;
      s.cfg.lr_curve = old.lr_curve;
      s.info.config_hash = cfg.config_hash();
    }
    if (old.config_hash() != cfg.config_hash() && !force)
      throw Error(ckpt, "checkpoint was made with a different training config",
                  "use the same config, another --out, or --force to continue anyway");
    load_checkpoint_into(c, *s.net, *s.opt, s.bank->data(), s.graph.neighbors);
    s.epoch = c.epoch;
    s.step = c.step;
    if (s.lead()) s.best_knn_top1 = best_knn_top1_logged((fs::path(out_dir) / "metrics.jsonl").string());
    if (s.lead()) {
      log::info("resuming " + out_dir + " at epoch " + std::to_string(s.epoch) +
                (s.step ? ", step " + std::to_string(s.step) : ""));
      if (old.world_size != cfg.world_size)
        log::warn("resuming a run of " + std::to_string(old.world_size) + " rank(s) on " +
                  std::to_string(cfg.world_size) + ": the bank and graph carry over, but batches are split "
                  "differently from here on" + (s.step ? " (and the epoch resumes at the same global batch)" : ""));
    }
  }
  if (dist) {  // one starting point for every rank, whatever each rank's RNG did
    std::vector<torch::Tensor> state;
    for (auto& p : s.net->parameters()) state.push_back(p.data());
    for (auto& b : s.net->buffers()) state.push_back(b);
    dist->broadcast(state);
  }
  // Channels-last weights where that is faster on the CPU. After any checkpoint was loaded, so
  // that a resumed run uses the same convolution kernels as an uninterrupted one.
  if (s.device.is_cpu() && model::channels_last_pays_in_cpu_training(s.bf16, cfg.width))
    model::to_channels_last(*s.net);
  if (s.lead()) {
    log::info("precision " + cfg.precision + (s.bf16 ? " (CPU bfloat16: " + cpu_bf16_report() + ")" : ""));
    if (dist)
      log::info("data-parallel: " + std::to_string(dist->world()) + " ranks (" + dist->backend() + "), " +
                std::to_string(local_batch) + " of the global batch of " + std::to_string(cfg.batch_size) +
                " each" + (cfg.sync_bn ? ", BatchNorm synchronised" : ", BatchNorm per rank"));
    write_file_atomically((fs::path(out_dir) / "config.json").string(), cfg.to_json() + "\n");
  }
}

Trainer::~Trainer() = default;
int Trainer::start_epoch() const { return s_->epoch; }
const data::LoaderOptions& Trainer::loader_options() const { return s_->loader_opts; }

int Trainer::run(const std::function<void(const EpochMetrics&)>& on_epoch, int until_epoch,
                 int64_t max_steps) {
  auto& s = *s_;
  const auto& cfg = s.cfg;
  g_stop = false;
  StopOnSignals signals;
  // --sync-bn: the encoder's BatchNorm layers take their statistics over every rank while this
  // run trains. A single process takes the same arithmetic (float64 sums), so that the flag
  // means one run at any world size: 1 and N ranks then agree to rounding.
  struct SyncBn {
    explicit SyncBn(const std::shared_ptr<DistGroup>& d, bool on) {
      if (d && on) model::set_batch_norm_sync([d](torch::Tensor& t) { d->allreduce_sum(t); });
      else if (on) model::set_batch_norm_sync([](torch::Tensor&) {});
    }
    ~SyncBn() { model::set_batch_norm_sync(nullptr); }
  } sync_bn(s.dist, cfg.sync_bn);
  auto ckpt = (fs::path(s.out) / "checkpoint.pt").string();
  auto model_pt = (fs::path(s.out) / "model.pt").string();
  auto best_pt = (fs::path(s.out) / "best.pt").string();
  auto metrics_jsonl = (fs::path(s.out) / "metrics.jsonl").string();
  // An epoch's state is copied here into `snap` (device-side copies: a consistent snapshot in
  // milliseconds) and serialised and written by `writer` while the next epoch trains: model.pt +
  // model.json, checkpoint.pt, then the epoch's metrics line, so a line in metrics.jsonl means
  // its checkpoint is on disk. Rank 0 alone writes.
  CheckpointSnapshot snap(s.info.encoder, s.device);
  BackgroundJob writer;
  auto save_epoch = [&](EpochMetrics m) {
    auto t = std::chrono::steady_clock::now();
    writer.wait();  // the previous epoch's files (so `snap` is free); rethrows their write error
    // The CUDA graphs for the next epoch's learning rate are captured now, while the writer is
    // idle: its device-to-host copies must not overlap a capture.
    if (s.graphed && s.epoch <= cfg.epochs) {
      set_lr(*s.opt, cfg.lr_at(s.epoch));
      s.net->train();
      s.graphed->recapture();
    }
    if (!s.lead()) return m;
    snap.capture({s.epoch, s.step, cfg.to_json(), {}, {}}, *s.net, *s.opt, s.bank->data(), s.graph.neighbors);
    m.checkpoint = seconds_since(t);
    writer.submit([&, m]() mutable {
      auto t_write = std::chrono::steady_clock::now();
      // model.pt first: a run killed between the two redoes the epoch from the older
      // checkpoint and rewrites model.pt, while the other order could leave a finished run
      // with the previous epoch's model.pt.
      const std::string model_bytes = snap.model_bytes();
      model::save_model_bytes(model_bytes, s.info, model_pt);
      write_file_atomically(ckpt, snap.checkpoint_bytes());
      // best.pt (+ best.json): the model of the epoch with the highest kNN top-1 so far (ties go
      // to the later epoch, as the reference's best.pth).
      if (m.knn_top1 >= 0 && m.knn_top1 >= s.best_knn_top1) {
        model::save_model_bytes(model_bytes, s.info, best_pt);
        s.best_knn_top1 = m.knn_top1;
      }
      m.checkpoint_write = seconds_since(t_write);
      std::ofstream(metrics_jsonl, std::ios::app) << metrics_line(m);
    });
    return m;
  };
  data::Loader loader(s.ds, s.loader_opts);
  int last_done = s.epoch - 1;
  int64_t steps_this_call = 0;
  // On a GPU the encoder's half of the step is replayed from CUDA graphs (graphed_step.h); the
  // method's half stays eager. Created here, after any checkpoint was loaded into the model.
  // The checkpoint writer's device-to-host copies must not run during the capture. Not with
  // ranks: the gradient allreduce sits between backward and the SGD step the graph holds.
  if (s.modes.cuda && s.modes.cuda_graph && cuda_graphs_built() && !s.dist)
    s.graphed = std::make_unique<GraphedStep>(s.net, *s.opt, 2, [&] { writer.wait(); });
  bool stop = false;  // agreed by every rank (a signal reaches them at different steps)
  std::vector<double> epoch_seconds;  // of this call's finished epochs, for the time left
  int last = until_epoch > 0 ? std::min(until_epoch, cfg.epochs) : cfg.epochs;
  for (; s.epoch <= last && !stop;) {
    EpochMetrics m;
    m.epoch = s.epoch;
    auto t_epoch = std::chrono::steady_clock::now();
    const double comm0 = s.dist ? comm_bytes(*s.dist) : 0;
    m.lr = cfg.lr_at(s.epoch);
    set_lr(*s.opt, m.lr);
    m.omega = ramp_weight(s.epoch, cfg.warmup, s.modes.ramp == Ramp::Gaussian);
    double inv_weight = cfg.lambda * m.omega;
    LossConfig step_loss = s.loss_cfg;  // L_inv is skipped entirely while its weight is 0
    step_loss.use_invariance = s.loss_cfg.use_invariance && inv_weight > 0;
    if (s.modes.graph == GraphMode::Epoch && s.step == 0) s.rebuild_graph(m, step_loss.use_invariance);
    s.net->train();
    loader.start_epoch(s.epoch, size_t(s.step));  // s.step > 0: resume inside the epoch
    Progress bar("epoch " + std::to_string(s.epoch) + "/" + std::to_string(cfg.epochs),
                 int64_t(loader.batches_per_epoch()), "img", cfg.batch_size);
    int64_t images = 0, steps = 0;
    // Loss sums (total, L_ins, L_inv; each batch's mean × its size) accumulate where the loss
    // is, in one tensor: read once an epoch.
    auto sums = torch::zeros({3}, torch::TensorOptions(torch::kDouble).device(s.device));
    while (!stop) {
      auto t0 = std::chrono::steady_clock::now();
      auto batch = loader.next();
      m.data_wait += seconds_since(t0);
      if (!batch) break;
      if (batch->indices.size(0) < 2) continue;  // --keep-last-batch: BatchNorm needs two items
      stop = g_stop || (max_steps > 0 && ++steps_this_call >= max_steps);
      auto z = s.train_step(*batch, step_loss, inv_weight, sums, stop, m);
      s.update_bank(*batch, z, m);
      images += batch->indices.size(0);
      s.step = int64_t(loader.position());
      ++steps;
      if (bar.due()) bar.update(steps, progress_note(sums, images, epoch_seconds, last - s.epoch,
                                                     seconds_since(t_epoch), double(steps) / loader.batches_per_epoch()));
    }
    bar.update(steps);
    bar.finish();
    if (stop) break;  // the checkpoint below is written with the partial epoch position
    s.epoch_end(m, sums, images);
    m.seconds = seconds_since(t_epoch);
    epoch_seconds.push_back(m.seconds);
    m.images_per_second = m.images / std::max(1e-9, m.seconds);
    m.skipped_bad = int64_t(loader.bad_count());
    if (s.dist) m.comm_bytes = comm_bytes(*s.dist) - comm0;
    last_done = s.epoch;
    ++s.epoch;
    s.step = 0;
    m = save_epoch(m);
    if (on_epoch && s.lead()) on_epoch(m);
  }
  writer.wait();  // every epoch's files are on disk before run() returns
  if (stop && s.lead()) {
    write_checkpoint(ckpt, {s.epoch, s.step, cfg.to_json(), {}, {}}, *s.net, *s.opt, s.bank->data(), s.graph.neighbors);
    log::info("interrupted: checkpoint written at epoch " + std::to_string(s.epoch) + ", step " +
              std::to_string(s.step) + "; rerun the same command to resume");
  }
  if (stop) g_stop = true;  // stop_requested() tells the caller the run was interrupted
  return last_done;
}

}  // namespace invp::train
