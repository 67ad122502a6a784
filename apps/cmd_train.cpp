// `invp train`.
#include "common.h"

#include <invp/core/log.h>
#include <invp/core/launch.h>
#include <invp/train/distributed.h>
#include <invp/train/trainer.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace invp::app {
// The training augmentation's options, shared with `invp data preview` (cmd_data.cpp), so a
// preview is drawn from the transform training builds.
void add_augment_options(CLI::App* t, train::TrainConfig& c) {
  t->add_option("--augment", c.augment,
                "Training augmentation recipe: small (the reference's for small images: random crop, colour "
                "jitter, grey; no blur or flip; CIFAR statistics; evaluated at the input size) or imagenet "
                "(the reference's ImageNet recipe: + Gaussian blur and horizontal flip, softer hue, ImageNet "
                "statistics; evaluated after resizing to input-size / 0.875, e.g. 256 then centre 224). "
                "The strengths below override the recipe's; model.json records them")->capture_default_str();
  t->add_option("--crop-scale", c.crop_scale, "Random-resized-crop: smallest share of the image area kept (both recipes 0.2; milder crops keep more of the layout)")->capture_default_str();
  const std::string own = " (-1: the recipe's)";
  t->add_option("--flip", c.flip, "Horizontal-flip probability: small 0, imagenet 0.5" + own)->capture_default_str();
  t->add_option("--brightness", c.brightness, "Colour-jitter brightness strength: 0.4 in both recipes" + own)->capture_default_str();
  t->add_option("--contrast", c.contrast, "Colour-jitter contrast strength: 0.4 in both" + own)->capture_default_str();
  t->add_option("--saturation", c.saturation, "Colour-jitter saturation strength: 0.4 in both" + own)->capture_default_str();
  t->add_option("--hue", c.hue, "Colour-jitter hue shift, up to 0.5 turns: small 0.4, imagenet 0.1; 0 keeps hue, which identifies colourful images" + own)->capture_default_str();
  t->add_option("--jitter", c.jitter, "Probability the colour jitter is applied: small 1, imagenet 0.8" + own)->capture_default_str();
  t->add_option("--grayscale", c.grayscale, "Probability a view is turned grey: 0.2 in both" + own)->capture_default_str();
  t->add_option("--blur", c.blur, "Probability of a Gaussian blur (sigma 0.1-2 px at 224 px, scaled with --input-size): small 0, imagenet 0.5" + own)->capture_default_str();
}

namespace {
void add_train_options(CLI::App* t, train::TrainConfig& c) {
  add_augment_options(t, c);
  t->add_option("--data", c.data, "Training SOURCE (labels, if any, are used only for monitoring)")->capture_default_str();
  t->add_option("--limit", c.limit, "Train on the first N items only (0 = all)")->capture_default_str();
  t->add_option("--test-data", c.test_data, "Labelled SOURCE for the weighted-kNN monitor (K 200, sigma 0.07, against the bank)");
  t->add_option("--input-size", c.input_size, "Square input side fed to the network")->capture_default_str();
  t->add_option("--channels", c.channels, "Input channels: 1, 3, or 0 for the source's own")->capture_default_str();
  t->add_option("--arch-depth", c.arch_depth, "ResNet depth: 18, 34 or 50")->capture_default_str();
  t->add_option("--stem", c.stem, "small (3x3/1, no max-pool) or imagenet (7x7/2 + max-pool)")->capture_default_str();
  t->add_option("--width", c.width, "Base channels (64 = torchvision; smaller runs faster on CPU)")->capture_default_str();
  t->add_option("--head", c.head, "Projection head: mlp-bn (Linear-BatchNorm-ReLU-Linear), mlp (the reference code's, no BatchNorm) or linear")->capture_default_str();
  t->add_option("--dim", c.dim, "Embedding dimension D")->capture_default_str();
  t->add_option("--tau", c.tau, "Temperature")->capture_default_str();
  t->add_option("--background", c.background, "M: background set size (top-M of z.V)")->capture_default_str();
  t->add_option("--knn", c.knn, "k of the kNN graph")->capture_default_str();
  t->add_option("--hops", c.hops, "l: propagation depth")->capture_default_str();
  t->add_option("--hard-positives", c.hard_positives, "P: hard positives per anchor")->capture_default_str();
  t->add_option("--lambda", c.lambda, "Weight of L_inv")->capture_default_str();
  t->add_option("--warmup", c.warmup, "T: instance-only epochs before L_inv starts")->capture_default_str();
  t->add_option("--bank-momentum", c.bank_momentum, "Memory-bank momentum m")->capture_default_str();
  t->add_option("--ramp", c.ramp, "binary or gaussian")->capture_default_str();
  t->add_option("--denominator", c.denominator,
                "L_inv's denominator: reference (the released code's default, exclusive=1: the top-M "
                "background less the anchor's own term), plain (its exclusive=0: the whole top-M) or paper "
                "(the paper's formula: the background outside N(i), plus the hard positives)")->capture_default_str();
  t->add_option("--positive-selection", c.positive_selection,
                "Which P of the propagated set N(i) L_inv pulls in: hardest (the least similar: the method) or "
                "easiest (the most similar: the reference's not_hardpos ablation)")->capture_default_str();
  t->add_option("--propagation", c.propagation, "bfs (exact, default) or concat (reference code)")->capture_default_str();
  t->add_option("--graph", c.graph, "epoch (rebuilt with FAISS each epoch) or online (reference)")->capture_default_str();
  t->add_option("--graph-search", c.graph_search,
                "How epoch graphs are searched: exact (all pairs) or ivf (k-means cells, ~probes/sqrt(N) of "
                "the work; recall in BENCHMARKS.md)")->capture_default_str();
  t->add_option("--graph-probes", c.graph_probes, "ivf: cells searched per bank row (more = closer to exact)")
      ->capture_default_str();
  t->add_option("--graph-features", c.graph_features,
                "What epoch graphs are built from: bank (the memory bank, the method) or recomputed (this "
                "epoch's model on the un-augmented training images: a purer graph for one extra forward "
                "pass over the data per epoch of L_inv; BENCHMARKS.md)")->capture_default_str();
  t->add_option("--loss", c.loss, "invp, or instance (L_inv off, for ablations)")->capture_default_str();
  t->add_option("--positives", c.positives,
                "graph (the method: propagated over the kNN graph, no labels), or oracle (ANALYSIS ONLY: "
                "keeps the propagated positives that share the anchor's label; needs a labelled source; "
                "shows what a label-pure graph would give)")->capture_default_str();
  t->add_option("--lr", c.lr, "Base learning rate")->capture_default_str();
  t->add_option("--momentum", c.momentum, "SGD momentum")->capture_default_str();
  t->add_option("--weight-decay", c.weight_decay, "Weight decay")->capture_default_str();
  t->add_option("--schedule", c.schedule,
                "cosine (the reference's: ½·lr·(1 + cos(π(e−1)/E)) for epoch e of E, so the last epoch still "
                "learns) or step (lr × gamma at each of --milestones)")->capture_default_str();
  t->add_option("--milestones", c.milestones,
                "With --schedule step: epochs from which the rate is multiplied by --gamma once more, e.g. "
                "400,600,700 (the reference's for 800 epochs)")->delimiter(',');
  t->add_option("--gamma", c.gamma, "With --schedule step: the factor at each milestone")->capture_default_str();
  t->add_option("--batch-size", c.batch_size, "Batch size: the global batch, split evenly over ranks in a data-parallel run")->capture_default_str();
  t->add_flag("--keep-last-batch", c.keep_last_batch,
              "Train on each epoch's last, partial batch too, as the reference does (default: dropped, so "
              "every step has the same shape and N mod batch bank rows wait an epoch); one rank only");
  t->add_option("--embed-features", c.embed_features,
                "What invp embed writes for the trained model when not told (model.json \"embed\"): head (the "
                "projection head's output, what training compares) or backbone (the pooled features before "
                "it); eval copies on your own data shows which finds your images better")
      ->capture_default_str()
      ->check(CLI::IsMember({"head", "backbone"}));
  t->add_option("--epochs", c.epochs, "Total epochs (raising it on resume needs no --force)")->capture_default_str();
  t->add_option("--knn-every", c.knn_every, "Run the kNN monitor every n epochs")->capture_default_str();
  t->add_option("--workers", c.workers, "Loader worker threads")->capture_default_str();
  t->add_option("--device", c.device, "cpu or cuda")->capture_default_str();
  t->add_option("--precision", c.precision,
                "auto (tf32 on cuda; on cpu bf16 where the CPU runs bfloat16 natively, AMX or AVX512-BF16, and --width is 16 "
                "or more, else fp32), tf32 (cuda: TF32 "
                "tensor cores for convolutions and products; the kNN graph stays exact float32), fp32 "
                "(IEEE float32 throughout) or bf16 (cpu: the encoder under bfloat16 autocast with "
                "float32 head and weights; faster steps where the CPU has AMX, BENCHMARKS.md). The run's config.json "
                "records the choice made")->capture_default_str();
  t->add_option("--cuda-graph", c.cuda_graph,
                "cuda: on (replay the encoder's forward and backward + SGD step from CUDA graphs, "
                "captured after two eager steps: the GPU no longer waits for LibTorch to launch "
                "hundreds of small kernels) or off (every op launched eagerly); ignored on cpu")
      ->capture_default_str();
  t->add_flag("--sync-bn", c.sync_bn,
              "With several ranks: BatchNorm statistics over the whole global batch (one small allreduce per "
              "layer and step) instead of each rank's share; the run then matches a single-process one");
  t->add_flag("--grad-overlap,!--no-grad-overlap", c.grad_overlap,
              "With several ranks: start each bucket of gradients on its allreduce while backward is still computing the "
              "layers below it (as PyTorch's DistributedDataParallel does); --no-grad-overlap waits for backward to end "
              "first. The averaged gradients are the same either way")
      ->capture_default_str();
  t->add_option("--dist-timeout", c.dist_timeout,
                "With several ranks: seconds to wait for a peer in a collective before the run stops with an "
                "error (a rank that died or hangs); rerunning the command resumes")->capture_default_str();
  t->add_flag("--profile", c.profile,
              "cuda: wait for the GPU at each phase of a step, so metrics.jsonl's per-phase times "
              "(data_wait, forward, backward, bank_graph_loss) are exact; costs some overlap");
}
}  // namespace

void add_train_command(CLI::App& app) {
  auto cfg = std::make_shared<train::TrainConfig>();
  auto out = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  auto nproc = std::make_shared<int>(1);
  auto max_steps = std::make_shared<int64_t>(0);
  auto* t = app.add_subcommand(
      "train",
      "Train an encoder with Invariance Propagation. Writes OUT/checkpoint.pt (every epoch and on "
      "Ctrl-C), OUT/model.pt + model.json, OUT/metrics.jsonl; rerunning on OUT resumes.");
  t->add_option("-o,--out", *out, "Run directory")->required();
  t->add_flag("--force", *force, "Resume even if the checkpoint's config differs");
  t->add_option("--nproc", *nproc,
                "Train data-parallel as N ranks on this machine (Gloo over 127.0.0.1; the thread budget is split "
                "between them). --batch-size stays the global batch. On a cluster, launch one process per rank "
                "with torchrun --no-python or srun instead: invp reads RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT")
      ->check(between(1, 1024))->capture_default_str();
  t->add_option("--max-steps", *max_steps,
                "Stop after N training steps as Ctrl-C would (checkpoint at that exact step; for tests and "
                "benchmarks); 0 = no limit")->capture_default_str();
  add_train_options(t, *cfg);
  t->callback([cfg, out, force, nproc, max_steps] {
    globals().action = [cfg, out, force, nproc, max_steps] {
      if (int rc = relaunch_as_ranks(*nproc); rc >= 0) {
        if (rc == 0 && globals().json) std::cout << nlohmann::json{{"out", *out}, {"ranks", *nproc}}.dump() << "\n";
        std::fflush(stdout);
        std::fflush(stderr);
        std::_Exit(rc);
      }
      cfg->seed = globals().seed;
      const auto env = rank_env_from_environment();
      std::shared_ptr<train::DistGroup> dist;
      if (env.distributed())
        dist = train::DistGroup::connect(env, std::chrono::seconds(cfg->dist_timeout), cfg->device == "cuda");
      train::Trainer trainer(*cfg, *out, *force, dist);
      trainer.run([](const train::EpochMetrics& m) {
        if (globals().json) return;
        char line[256];
        std::snprintf(line, sizeof line,
                      "epoch %d  loss %.4f (ins %.4f inv %.4f)  lr %.4f  %.0f img/s  graph %.2fs",
                      m.epoch, m.loss, m.instance, m.invariance, m.lr, m.images_per_second,
                      m.graph_seconds);
        std::string s = line;
        if (m.graph_features_seconds > 0) s += " + features " + std::to_string(m.graph_features_seconds).substr(0, 5) + "s";
        if (m.knn_top1 >= 0) s += "  kNN top1 " + std::to_string(100 * m.knn_top1).substr(0, 5) + "%";
        log::info(s);
      }, 0, *max_steps);
      if (env.rank != 0) return;
      if (globals().json) std::cout << nlohmann::json{{"out", *out}}.dump() << "\n";
    };
  });
}
}  // namespace invp::app
