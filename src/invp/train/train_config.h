// Everything that defines a training run. Every field is also a flag of `invp train` and a
// key under [train] in a config file (configs/*.toml).
#pragma once
#include <invp/data/augment.h>

#include <cstdint>
#include <string>
#include <vector>

namespace invp::train {

// The string modes of TrainConfig parsed once (TrainConfig::modes()), so the trainer branches on
// enums, not on string comparisons.
enum class GraphMode { Epoch, Online };
enum class GraphSearch { Exact, Ivf };
enum class GraphFeatures { Bank, Recomputed };
enum class LossKind { Invp, Instance };
enum class Positives { Graph, Oracle };
enum class Ramp { Binary, Gaussian };
enum class Schedule { Cosine, Step };
enum class Propagation { Bfs, Concat };
enum class Precision { Fp32, Tf32, Bf16 };  // as resolved for the device and CPU

struct TrainModes {
  GraphMode graph = GraphMode::Epoch;
  GraphSearch graph_search = GraphSearch::Exact;
  GraphFeatures graph_features = GraphFeatures::Bank;
  LossKind loss = LossKind::Invp;
  Positives positives = Positives::Graph;
  Ramp ramp = Ramp::Binary;
  Schedule schedule = Schedule::Cosine;
  Propagation propagation = Propagation::Bfs;
  bool paper_denominator = false;
  bool plain_denominator = false;   // the reference's exclusive=0
  bool easiest_positives = false;   // --positive-selection easiest (the reference's not_hardpos)
  bool cuda = false;
  bool cuda_graph = true;
};

struct TrainConfig {
  // data
  std::string data = "/usr/share/datasets/fashion-mnist:train";
  std::string test_data;         // for the weighted-kNN monitor (labels needed)
  int64_t limit = 0;             // train on the first `limit` items only (0 = all)
  int input_size = 28;
  int channels = 0;              // 0 = the source's own (1 for grey IDX)
  // training augmentation (docs/ALGORITHM.md, "Encoder and augmentation"): a recipe, and its
  // strengths; a strength left at -1 takes the recipe's value (augment_config()).
  std::string augment = "small"; // small (the reference's CIFAR recipe) | imagenet (its ImageNet
                                 // --blur recipe: + blur, flip, ImageNet statistics, eval 256 → 224)
  float crop_scale = 0.2f;       // RandomResizedCrop: smallest share of the image area (both 0.2)
  float flip = -1;               // horizontal-flip probability (small 0, imagenet 0.5)
  float brightness = -1, contrast = -1, saturation = -1;  // colour jitter (both recipes 0.4)
  float hue = -1;                // colour jitter (small 0.4, imagenet 0.1)
  float jitter = -1;             // probability the colour jitter is applied (small 1, imagenet 0.8)
  float grayscale = -1;          // probability of grey (both 0.2)
  float blur = -1;               // probability of a Gaussian blur (small 0, imagenet 0.5)
  // encoder (docs/ALGORITHM.md: ResNet-18 small stem, MLP head, D 128)
  int arch_depth = 18;
  std::string stem = "small";
  int width = 64;
  std::string head = "mlp-bn";
  int dim = 128;
  // method (reference constants: docs/ALGORITHM.md, "Constants")
  float tau = 0.2f;
  int64_t background = 4096;     // M
  int knn = 4;                   // k of the graph
  int hops = 3;                  // l, propagation depth
  int64_t hard_positives = 20;   // P
  float lambda = 0.6f;
  int warmup = 30;               // T: ω = 0 up to epoch T
  float bank_momentum = 0.5f;
  std::string ramp = "binary";          // binary | gaussian
  std::string denominator = "reference"; // reference (exclusive=1) | paper | plain (exclusive=0)
  std::string positive_selection = "hardest"; // hardest (the method) | easiest (reference not_hardpos)
  std::string propagation = "bfs";      // bfs | concat
  std::string graph = "epoch";          // epoch | online
  std::string graph_search = "exact";   // epoch graphs: exact | ivf (approximate, index/ivf_knn.h)
  int64_t graph_probes = 8;             // ivf: cells searched per row (of ~sqrt(N))
  // epoch graphs: bank (the memory bank's rows, the design) | recomputed (the current model's
  // features of the un-augmented training images, one extra forward pass per epoch of L_inv)
  std::string graph_features = "bank";
  std::string loss = "invp";            // invp | instance
  std::string positives = "graph";      // graph (the method) | oracle (analysis: label-filtered N(i))
  // optimiser
  double lr = 0.03;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  std::string schedule = "cosine";      // cosine | step (needs milestones)
  std::vector<int> milestones;          // step: epochs (1-based) from which the rate is ×gamma more
  double gamma = 0.1;                   // step: the factor at each milestone
  // The cosine curve (schedule.h): 2, the reference's, for every new run; 1, the curve of invp
  // before it (last epoch at rate 0), for a checkpoint written then: from_json reads a config
  // without the key as 1 and the trainer finishes such a run on its own curve, with a warning.
  int lr_curve = 2;
  int batch_size = 128;
  // Train on the epoch's last, partial batch too (the reference's DataLoader keeps it, so every
  // bank row is refreshed each epoch); off, it is dropped and N mod batch rows wait an epoch.
  // A last batch of one item is dropped even so (BatchNorm needs two). One rank only.
  bool keep_last_batch = false;
  // run (not part of the config hash)
  int epochs = 800;
  int knn_every = 1;
  int workers = 1;
  uint64_t seed = 0;
  std::string device = "cpu";
  // auto: tf32 on cuda; on cpu bf16 where the CPU has AMX or AVX512-BF16 (cpu_features.h) and width >= 16,
  // else fp32.
  // tf32 (cuda: TF32 convolutions and products; fp32 on cpu) | fp32 | bf16 (cpu only: the
  // encoder under bfloat16 autocast, channels-last; model/precision.h)
  std::string precision = "auto";
  // cuda: on replays the encoder's forward and backward + SGD step from CUDA graphs (captured
  // after two eager steps and again when the learning rate changes; graphed_step.h) | off
  std::string cuda_graph = "on";
  bool profile = false;            // cuda: synchronise at each phase so the times are exact
  // data-parallel runs (train/distributed.h): BatchNorm statistics over the global batch
  // instead of each rank's share; seconds a collective may wait for a peer before the run stops
  // with an error; the number of ranks, recorded by the trainer (a resume at another size warns).
  bool sync_bn = false;
  int dist_timeout = 120;
  // Ranks: start each gradient bucket's allreduce from backward's hooks as soon as the bucket is
  // full (grad_buckets.h), instead of all of them after backward. The sums are the same either way.
  bool grad_overlap = true;
  int world_size = 1;
  // What `invp embed` writes for this model when not told (model.json "embed"): head | backbone.
  std::string embed_features = "head";

  void validate() const;                 // throws invp::Error naming the bad key
  TrainModes modes() const;              // validate() and the modes as enums
  // What `precision` means on `device` and this CPU: "tf32", "fp32" or "bf16". Throws
  // invp::Error for bf16 on a CPU without bf16 instructions.
  std::string resolved_precision() const;
  // This config with every augmentation strength left at -1 set to its recipe's value.
  TrainConfig with_augment_resolved() const;
  // The training transform for `channels`-channel data (eval: data::eval_config of it).
  data::AugmentConfig augment_config(int channels) const;
  // model.json's "augment": the recipe's name and every strength the transform uses.
  std::string augment_json(int channels) const;
  // The learning rate of 1-based epoch e (schedule.h) under this config.
  double lr_at(int epoch) const;
  std::string to_json() const;
  static TrainConfig from_json(const std::string& text, const std::string& file);
  // Hash of the training-defining keys only (not epochs, workers, device, precision, monitor).
  std::string config_hash() const;
};

}  // namespace invp::train
