// The Invariance Propagation training loop: one augmented view per image per step, memory
// bank, kNN graph rebuilt from the bank at the start of every epoch (or refreshed online),
// propagation, L_ins + λ·ω(e)·L_inv, SGD, checkpoint every epoch, weighted-kNN monitor.
// Run directory: checkpoint.pt, model.pt + model.json, metrics.jsonl, config.json.
#pragma once
#include <invp/data/loader.h>
#include <invp/train/train_config.h>

#include <functional>
#include <memory>
#include <string>

namespace invp::train {
class DistGroup;

struct EpochMetrics {
  int epoch = 0;
  double loss = 0, instance = 0, invariance = 0, lr = 0, omega = 0;
  double knn_top1 = -1, knn_top5 = -1;  // −1 when not measured
  double seconds = 0, images_per_second = 0;
  double data_wait = 0, forward = 0, backward = 0, method = 0;  // seconds in the epoch
  // After the epoch: seconds the training thread spent waiting for the previous epoch's write
  // and copying the state into the checkpoint snapshot, and seconds the background thread took
  // to serialise and write it.
  double checkpoint = 0, checkpoint_write = 0;
  double graph_seconds = 0, graph_mean_similarity = 0, graph_mutual = 0, graph_same_label = -1;
  double graph_features_seconds = 0;  // --graph-features recomputed: the forward pass the graph is built from
  int64_t skipped_bad = 0;
  int64_t images = 0;  // trained on in the epoch, over all ranks
  // Data-parallel runs: seconds this rank (rank 0 for the log) spent in the gradient allreduce
  // and in the per-step all-gathers of the bank update, the bytes its collectives carried in the
  // epoch, and the hash of the bank and graph every rank holds at the epoch's end. `allreduce`
  // is the part backward did not hide; gradient buckets a step, and how many of them the last
  // step started from backward's hooks (--grad-overlap).
  double allreduce = 0, allgather = 0, comm_bytes = 0;
  int64_t grad_buckets = 0, buckets_in_backward = 0;
  std::string state_hash;
};

class Trainer {
 public:
  // Opens (or resumes from) out_dir. A checkpoint with a different config hash is refused
  // unless force.
  // `dist`: this process is one rank of a data-parallel run (train/distributed.h); every rank
  // constructs its Trainer with the same config and out_dir (only rank 0 writes there), and
  // refuses to start when the ranks' configs or data differ.
  Trainer(TrainConfig config, std::string out_dir, bool force = false, std::shared_ptr<DistGroup> dist = nullptr);
  ~Trainer();
  // Trains up to config.epochs (or only up to until_epoch when > 0, as if stopped there;
  // the lr schedule still spans config.epochs); calls on_epoch after each epoch. Returns the
  // last epoch done. max_steps > 0 stops after that many training steps of this call as a
  // Ctrl-C would (checkpoint at the exact position, inside an epoch).
  int run(const std::function<void(const EpochMetrics&)>& on_epoch = {}, int until_epoch = 0,
          int64_t max_steps = 0);
  int start_epoch() const;  // 1-based epoch the next run() starts at
  // What the training loader is built from (batch share, augmentation): for tests and previews
  // of exactly what this run trains on.
  const data::LoaderOptions& loader_options() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// True once SIGINT/SIGTERM arrived (the trainer installs the handlers while running).
bool stop_requested();

}  // namespace invp::train
