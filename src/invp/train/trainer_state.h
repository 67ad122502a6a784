// Internal to the trainer (trainer.cpp, trainer_phases.cpp): a run's state and the phases an
// epoch goes through. Not installed.
//
//   per epoch:  rebuild_graph  →  per step: train_step → update_bank  →  epoch_end (monitor)
//               →  checkpoint (trainer.cpp)
//
// A data-parallel run (dist set) differs in exactly these places: train_step averages the
// gradients over the ranks (and agrees on stopping), update_bank and the online graph take every
// rank's (index, feature) pairs, rebuild_graph searches this rank's rows and gathers the rest,
// epoch_end sums the loss over ranks and checks that the ranks still agree; only rank 0 writes.
#pragma once
#include <invp/core/lock_file.h>
#include <invp/data/dataset.h>
#include <invp/data/loader.h>
#include <invp/graph/knn_graph.h>
#include <invp/model/encoder.h>
#include <invp/model/model_io.h>
#include <invp/train/distributed.h>
#include <invp/train/grad_buckets.h>
#include <invp/train/invariance_loss.h>
#include <invp/train/memory_bank.h>
#include <invp/train/train_config.h>
#include <invp/train/trainer.h>

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

namespace invp::train {

class GraphedStep;

struct Trainer::State {
  std::unique_ptr<DirLock> lock;  // one trainer per run directory (rank 0's)
  TrainConfig cfg;
  TrainModes modes;
  std::string out;
  std::shared_ptr<data::Dataset> ds, test_ds;
  model::ModelInfo info;
  model::Encoder net{nullptr};
  std::unique_ptr<torch::optim::SGD> opt;
  std::unique_ptr<MemoryBank> bank;
  graph::KnnGraph graph;
  torch::Tensor labels;  // N int64 (−1 unknown), for monitoring only
  int epoch = 1;         // epoch in progress / next to run
  double best_knn_top1 = -1;  // best.pt's monitor figure (from metrics.jsonl on resume)
  int64_t step = 0;      // loader batches of `epoch` already consumed (= steps, unless all-bad batches were skipped)
  torch::Device device{torch::kCPU};  // model, bank and loss; the graph's lists stay on the host
  bool bf16 = false;                  // the encoder under CPU bfloat16 autocast
  LossConfig loss_cfg;
  data::LoaderOptions loader_opts;
  std::shared_ptr<DistGroup> dist;    // null: a single process
  std::unique_ptr<GraphedStep> graphed;  // CUDA graphs of the encoder's half of the step
  // Ranks: the gradient allreduce (made at the first step, once the model is in place).
  std::unique_ptr<GradientBuckets> buckets;

  bool lead() const { return !dist || dist->rank() == 0; }  // writes files, logs, monitors
  int world() const { return dist ? dist->world() : 1; }
  // --profile on a GPU: wait for it at each phase boundary so the phase times are exact.
  bool cuda_profile() const { return device.is_cuda() && cfg.profile; }

  // Host tensors the step sends to the device: pinned and queued on a GPU, as they are on a CPU.
  torch::Tensor to_device(const torch::Tensor& t) const;

  // The epoch graph from the bank (or from recomputed features) into `graph`, with its stats.
  void rebuild_graph(EpochMetrics& m, bool use_invariance);
  // One optimisation step on `batch`: forward, loss, backward, gradients averaged over ranks,
  // SGD. Returns the batch's features (detached) and adds its loss sums to `sums`. `stop` in:
  // this rank wants to stop; out: some rank does (every rank then stops after this step).
  torch::Tensor train_step(const data::Batch& batch, const LossConfig& loss, double inv_weight,
                           torch::Tensor& sums, bool& stop, EpochMetrics& m);
  // The memory bank (and an online graph's rows) from the step's features, every rank's.
  void update_bank(const data::Batch& batch, const torch::Tensor& features, EpochMetrics& m);
  // Loss means over every rank's images, the kNN monitor (rank 0) and the ranks' agreement.
  void epoch_end(EpochMetrics& m, torch::Tensor sums, int64_t images);

 private:
  // Rows [r0, r1) of an N-row result computed by each rank, gathered on every rank.
  torch::Tensor gather_row_slices(const torch::Tensor& part, int64_t n);
  // The rows the epoch graph is built from: the bank, or this epoch's features of the data.
  torch::Tensor graph_rows(EpochMetrics& m);
};

// Runs the model (eval mode, no gradients) over every item of ds under the eval transform and
// hands each batch to `take` with its normalised features, on the training device; `bf16`: the
// forward under CPU bfloat16 autocast (model/precision.h). The model is left in eval mode.
void for_each_eval_batch(model::Encoder& net, const data::LoaderOptions& train_opts, torch::Device device, bool bf16,
                         const std::shared_ptr<data::Dataset>& ds,
                         const std::function<void(const data::Batch&, const torch::Tensor&)>& take);

// This rank's contiguous share [begin, end) of n rows among `world` ranks.
std::pair<int64_t, int64_t> row_slice(int64_t n, int rank, int world);

}  // namespace invp::train
