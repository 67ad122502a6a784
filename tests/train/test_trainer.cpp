// Trainer end to end on tiny synthetic IDX data: resume equals an uninterrupted run
// bitwise, a changed config is refused, and training learns something real.
#include <invp/core/cpu_features.h>
#include <invp/core/error.h>
#include <invp/core/threads.h>
#include <invp/data/augment.h>
#include <invp/data/dataset.h>
#include <invp/data/loader.h>
#include <invp/graph/knn_graph.h>
#include <invp/model/model_io.h>
#include <invp/train/checkpoint.h>
#include <invp/train/memory_bank.h>
#include <invp/train/schedule.h>
#include <invp/train/sgd_step.h>
#include <invp/train/trainer.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/serialize/input-archive.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <vector>

#include "formats_doc.h"
#include "synthetic_idx.h"
#include "full_disk.h"

namespace fs = std::filesystem;
using invp::train::TrainConfig;
using invp::train::Trainer;

namespace {
struct Fixture {
  fs::path root;
  TrainConfig cfg;
  Fixture(const std::string& name) {
    root = fs::temp_directory_path() / ("invp_train_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(root);
    invp_test::write_idx(root / "data", "train", 512, 1);
    invp_test::write_idx(root / "data", "t10k", 128, 2);
    cfg.data = (root / "data").string() + ":train";
    cfg.input_size = 28;
    cfg.width = 8;
    cfg.dim = 32;
    cfg.background = 256;
    cfg.hard_positives = 5;
    cfg.batch_size = 64;
    cfg.lr = 0.003;  // the reference 0.03 is tuned for 800 epochs of a full-width net
    cfg.warmup = 1;  // epoch 2 already uses L_inv
    cfg.epochs = 2;
    cfg.seed = 7;
    cfg.precision = "fp32";  // the same arithmetic on every CPU; bf16 has tests of its own
  }
  ~Fixture() { fs::remove_all(root); }
  // A run long enough to learn the four classes, with the kNN monitor on the test split.
  void learning_run(int epochs, int warmup, int knn_every) {
    cfg.epochs = epochs;
    cfg.warmup = warmup;
    cfg.knn_every = knn_every;
    cfg.test_data = (root / "data").string() + ":test";
  }
};

// "time.forward", "graph.build_seconds", ...: every key of a JSON object, with its parents.
std::set<std::string> key_paths(const nlohmann::json& j, const std::string& prefix = "") {
  std::set<std::string> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    out.insert(prefix + it.key());
    if (it->is_object())
      for (auto& k : key_paths(*it, prefix + it.key() + ".")) out.insert(k);
  }
  return out;
}

torch::Tensor read_tensor(const fs::path& ckpt, const std::string& key) {
  torch::serialize::InputArchive a;
  a.load_from(ckpt.string());
  torch::Tensor t;
  a.read(key, t);
  return t;
}
// Two run directories hold bitwise-equal weights, memory banks and kNN graphs.
void expect_same_run(const fs::path& a_dir, const fs::path& b_dir) {
  for (auto key : {"bank", "graph"})
    EXPECT_TRUE(torch::equal(read_tensor(a_dir / "checkpoint.pt", key), read_tensor(b_dir / "checkpoint.pt", key)))
        << key;
  auto a = invp::model::load_model((a_dir / "model.pt").string());
  auto b = invp::model::load_model((b_dir / "model.pt").string());
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
}
}  // namespace

TEST(Trainer, ResumeEqualsUninterruptedRunBitwise) {
  invp::apply_thread_budget(1);
  Fixture f("resume");
  Trainer(f.cfg, (f.root / "straight").string()).run();
  Trainer(f.cfg, (f.root / "split").string()).run({}, /*until_epoch=*/1);
  auto more = f.cfg;
  more.knn_every = 3;  // a run-only key: no --force needed
  Trainer resumed(more, (f.root / "split").string());
  EXPECT_EQ(resumed.start_epoch(), 2);
  EXPECT_EQ(resumed.run(), 2);
  expect_same_run(f.root / "straight", f.root / "split");
  // The graph was really built (not the all-zero online start).
  EXPECT_GT(read_tensor(f.root / "straight/checkpoint.pt", "graph").max().item<int64_t>(), 0);
}

// Interrupted inside an epoch (as by Ctrl-C: checkpoint at the exact step), then resumed:
// the same weights, bank and graph as an uninterrupted run, and the resumed run does not
// redo the steps before the interruption.
TEST(Trainer, ResumeInsideAnEpochEqualsUninterruptedRun) {
  invp::apply_thread_budget(1);
  Fixture f("midepoch");
  Trainer(f.cfg, (f.root / "straight").string()).run();
  std::vector<invp::train::EpochMetrics> first;
  Trainer(f.cfg, (f.root / "split").string()).run([&](const auto& m) { first.push_back(m); }, 0, 5);
  EXPECT_TRUE(first.empty());  // stopped in epoch 1
  EXPECT_EQ(read_tensor(f.root / "split/checkpoint.pt", "step").item<int64_t>(), 5);
  Trainer(f.cfg, (f.root / "split").string()).run({}, 0, 7);  // 5 + 7: inside epoch 2
  EXPECT_EQ(read_tensor(f.root / "split/checkpoint.pt", "epoch").item<int64_t>(), 2);
  Trainer(f.cfg, (f.root / "split").string()).run();
  expect_same_run(f.root / "straight", f.root / "split");
}

// The approximate (IVF) epoch graph keeps resume exact: its k-means is seeded from the config.
TEST(Trainer, ResumeWithIvfGraphEqualsUninterruptedRun) {
  invp::apply_thread_budget(1);
  Fixture f("ivf");
  f.cfg.graph_search = "ivf";  // 512 rows: 23 cells, 8 probed
  Trainer(f.cfg, (f.root / "straight").string()).run();
  Trainer(f.cfg, (f.root / "split").string()).run({}, /*until_epoch=*/1);
  Trainer(f.cfg, (f.root / "split").string()).run();
  expect_same_run(f.root / "straight", f.root / "split");
  EXPECT_GT(read_tensor(f.root / "straight/checkpoint.pt", "graph").max().item<int64_t>(), 0);
}

// --precision bf16 (CPU autocast, channels-last weights): resume is still exact (the resumed
// run puts the loaded weights back into channels-last, so the same kernels run), the run
// records the precision it used, and it learns the four classes as the float32 run does.
TEST(Trainer, Bf16ResumesBitwiseAndLearns) {
  if (invp::cpu_bf16() == invp::CpuBf16::None) GTEST_SKIP() << "this CPU has no bfloat16 instructions";
  invp::apply_thread_budget(1);  // two 2-thread runs side by side (ctest -j2) spin OpenMP, many times slower
  Fixture f("bf16");
  f.cfg.precision = "bf16";
  Trainer(f.cfg, (f.root / "straight").string()).run();
  Trainer(f.cfg, (f.root / "split").string()).run({}, 0, 5);  // stopped inside epoch 1
  Trainer(f.cfg, (f.root / "split").string()).run();
  expect_same_run(f.root / "straight", f.root / "split");
  std::ifstream cj(f.root / "straight/config.json");
  EXPECT_EQ(nlohmann::json::parse(cj)["precision"], "bf16");
  // One step each in bf16 and float32 from the same start: the 64 bank rows it wrote differ
  // (bf16 really ran) by no more than bf16's rounding of the embedding (the rest are equal).
  Trainer(f.cfg, (f.root / "bf16_1").string()).run({}, 0, 1);
  auto fp32 = f.cfg;
  fp32.precision = "fp32";
  Trainer(fp32, (f.root / "fp32_1").string()).run({}, 0, 1);
  auto bank_bf16 = read_tensor(f.root / "bf16_1/checkpoint.pt", "bank");
  auto bank_fp32 = read_tensor(f.root / "fp32_1/checkpoint.pt", "bank");
  auto changed = (bank_bf16 != bank_fp32).any(1);
  EXPECT_EQ(changed.sum().item<int64_t>(), f.cfg.batch_size);
  auto row_cos = (bank_bf16 * bank_fp32).sum(1) / (bank_bf16.norm(2, 1) * bank_fp32.norm(2, 1));
  EXPECT_GT(row_cos.min().item<double>(), 0.99);

  f.learning_run(12, 6, 3);  // as the float32 test below
  std::vector<invp::train::EpochMetrics> ms;
  Trainer(f.cfg, (f.root / "learn").string()).run([&](const auto& m) { ms.push_back(m); });
  ASSERT_EQ(ms.size(), 12u);
  EXPECT_LT(ms.back().instance, ms.front().instance);
  EXPECT_GT(ms.back().knn_top1, 0.5);  // 4 classes: chance is 0.25
}

// auto: tf32 on cuda; on the CPU bf16 exactly where it pays (AMX, width >= 16), else fp32.
TEST(TrainConfig, PrecisionResolvesByDeviceAndCpu) {
  TrainConfig c;
  EXPECT_EQ(c.precision, "auto");
  c.device = "cuda";
  EXPECT_EQ(c.resolved_precision(), "tf32");
  c.precision = "fp32";
  EXPECT_EQ(c.resolved_precision(), "fp32");
  c.device = "cpu";
  c.precision = "tf32";  // a GPU mode: float32 on the CPU
  EXPECT_EQ(c.resolved_precision(), "fp32");
  c.precision = "auto";
  c.width = 16;
  EXPECT_EQ(c.resolved_precision(), invp::cpu_bf16() != invp::CpuBf16::None ? "bf16" : "fp32");  // AMX or AVX512-BF16
  c.width = 8;  // too narrow for bf16 to pay
  EXPECT_EQ(c.resolved_precision(), "fp32");
  c.precision = "bf16";
  if (invp::cpu_bf16() == invp::CpuBf16::None) {
    EXPECT_THROW(c.resolved_precision(), invp::Error);
  }
  else EXPECT_EQ(c.resolved_precision(), "bf16");
}

TEST(Trainer, DifferentConfigRefusedUnlessForced) {
  Fixture f("config");
  f.cfg.epochs = 1;
  Trainer(f.cfg, (f.root / "run").string()).run();
  auto other = f.cfg;
  other.tau = 0.1f;
  EXPECT_THROW(Trainer(other, (f.root / "run").string()), invp::Error);
  EXPECT_NO_THROW(Trainer(other, (f.root / "run").string(), /*force=*/true));
  // One trainer per run directory: a second one is refused while the first lives.
  Trainer first(f.cfg, (f.root / "run").string());
  try {
    Trainer second(f.cfg, (f.root / "run").string());
    ADD_FAILURE() << "second trainer on the same directory was allowed";
  } catch (const invp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("in use by another invp process"), std::string::npos) << e.what();
  }
}

// A checkpoint written on the earlier cosine curve (config.json without lr_curve, read as 1)
// finishes on that curve: resumed with today's default it is neither refused nor moved to the
// reference's curve mid-run; a fresh run uses the reference's.
TEST(Trainer, CheckpointOfTheFirstCosineCurveResumesOnIt) {
  Fixture f("lrcurve");
  nlohmann::json old = nlohmann::json::parse(f.cfg.to_json());
  old.erase("lr_curve");
  EXPECT_EQ(TrainConfig::from_json(old.dump(), "old.json").lr_curve, invp::train::kLrCurveFirst);
  auto first = f.cfg;
  first.lr_curve = invp::train::kLrCurveFirst;
  Trainer(first, (f.root / "run").string()).run({}, 1);
  std::vector<double> lr;
  Trainer(f.cfg, (f.root / "run").string()).run([&](const auto& m) { lr.push_back(m.lr); });
  ASSERT_EQ(lr.size(), 1u);
  EXPECT_NEAR(lr[0], 0.0, 1e-15);  // epoch 2 of 2 on the first curve
  std::vector<double> fresh;
  Trainer(f.cfg, (f.root / "fresh").string()).run([&](const auto& m) { fresh.push_back(m.lr); });
  ASSERT_EQ(fresh.size(), 2u);
  EXPECT_NEAR(fresh[0], f.cfg.lr, 1e-15);
  EXPECT_NEAR(fresh[1], f.cfg.lr / 2, 1e-12);  // ½·lr·(1 + cos(π/2))
}

TEST(TrainConfig, StepScheduleNeedsIncreasingMilestones) {
  TrainConfig c;
  c.schedule = "step";
  EXPECT_THROW(c.validate(), invp::Error);
  c.milestones = {400, 600, 700};
  EXPECT_NO_THROW(c.validate());
  EXPECT_NEAR(c.lr_at(400), c.lr * 0.1, 1e-15);
  c.milestones = {600, 400};
  EXPECT_THROW(c.validate(), invp::Error);
  TrainConfig cos;
  cos.milestones = {10};
  EXPECT_THROW(cos.validate(), invp::Error);  // milestones without step: a mistake, said
}

TEST(Trainer, LearnsClassStructureAndLossFalls) {
  invp::apply_thread_budget(1);  // two 2-thread runs side by side (ctest -j2) spin OpenMP, many times slower
  Fixture f("learn");
  f.learning_run(12, 6, 3);
  std::vector<invp::train::EpochMetrics> ms;
  Trainer(f.cfg, (f.root / "run").string()).run([&](const auto& m) { ms.push_back(m); });
  ASSERT_EQ(ms.size(), 12u);
  EXPECT_LT(ms.back().instance, ms.front().instance);
  EXPECT_GT(ms.back().knn_top1, 0.5);  // 4 classes: chance is 0.25
  EXPECT_NE(ms.back().invariance, 0);  // L_inv active after warm-up (may be negative)
  EXPECT_EQ(ms.front().invariance, 0);
  // metrics.jsonl (written by the background writer): one line per epoch, as reported, with
  // the keys of the documented example and no others (knn only on monitor epochs).
  auto doc = key_paths(nlohmann::json::parse(invp::test::formats_example("## metrics.jsonl")));
  std::ifstream lines(f.root / "run/metrics.jsonl");
  std::string line;
  size_t i = 0;
  for (; std::getline(lines, line); ++i) {
    ASSERT_LT(i, ms.size());
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["epoch"].get<int>(), ms[i].epoch);
    EXPECT_EQ(j["loss"].get<double>(), ms[i].loss);
    EXPECT_GT(j["time"]["checkpoint_write"].get<double>(), 0);  // the write's own time
    EXPECT_GT(j["time"]["checkpoint"].get<double>(), 0);
    auto keys = key_paths(j);
    if (ms[i].knn_top1 >= 0) {
      EXPECT_EQ(keys, doc) << line;
    }
    for (auto& k : keys) EXPECT_TRUE(doc.count(k)) << "undocumented key " << k;
  }
  EXPECT_EQ(i, ms.size());
  // best.pt + best.json: the model of the monitor epoch with the highest top-1 (the later on a tie).
  double best = -1;
  int best_epoch = 0;
  for (auto& m : ms)
    if (m.knn_top1 >= 0 && m.knn_top1 >= best) best = m.knn_top1, best_epoch = m.epoch;
  ASSERT_TRUE(fs::exists(f.root / "run/best.pt"));
  ASSERT_TRUE(fs::exists(f.root / "run/best.json"));
  auto bytes = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(f.root / "run/best.pt") == bytes(f.root / "run/model.pt"), best_epoch == 12) << best_epoch;
  EXPECT_NO_THROW(invp::model::load_model((f.root / "run/best.pt").string()));
}

// --keep-last-batch: the epoch's partial last batch is trained on and its bank rows refreshed
// (500 = 7 × 64 + 52); without it those 52 rows keep their initial values. A remainder of one
// item is skipped all the same (BatchNorm needs two).
TEST(Trainer, KeepLastBatchRefreshesEveryBankRow) {
  invp::apply_thread_budget(1);
  Fixture f("lastbatch");
  f.cfg.epochs = 1;
  for (int64_t limit : {500, 449}) {
    for (bool keep : {false, true}) {
      f.cfg.limit = limit;
      f.cfg.keep_last_batch = keep;
      auto dir = f.root / ("run" + std::to_string(limit) + (keep ? "k" : "d"));
      std::vector<invp::train::EpochMetrics> ms;
      Trainer(f.cfg, dir.string()).run([&](const auto& m) { ms.push_back(m); });
      ASSERT_EQ(ms.size(), 1u);
      const int64_t want = keep && limit == 500 ? 500 : 448;
      EXPECT_EQ(ms[0].images, want) << limit << " keep " << keep;
      auto bank = read_tensor(dir / "checkpoint.pt", "bank");
      auto init = invp::train::MemoryBank(limit, f.cfg.dim, f.cfg.seed).data();
      auto unchanged = (bank - init).abs().amax(1).eq(0).sum().item<int64_t>();
      EXPECT_EQ(unchanged, limit - want) << limit << " keep " << keep;
    }
  }
}

// --graph-features recomputed: the graph L_inv uses in epoch 2 is the exact kNN graph of the
// epoch-1 model's features of the un-augmented training images (computed here independently:
// the saved model, the eval transform, normalised rows), not the graph of the bank.
TEST(Trainer, RecomputedGraphIsTheGraphOfTheModelsCleanFeatures) {
  invp::apply_thread_budget(1);
  Fixture f("recomputed");
  f.cfg.graph_features = "recomputed";
  auto dir = f.root / "run";
  Trainer(f.cfg, dir.string()).run({}, /*until_epoch=*/1);
  auto net = invp::model::load_model((dir / "model.pt").string());  // eval mode
  auto bank = read_tensor(dir / "checkpoint.pt", "bank");
  Trainer(f.cfg, dir.string()).run({}, 0, /*max_steps=*/1);  // builds epoch 2's graph, one step
  auto graph = read_tensor(dir / "checkpoint.pt", "graph");

  auto ds = invp::data::open_dataset(f.cfg.data);
  invp::data::LoaderOptions lo;
  lo.batch_size = 100;
  lo.shuffle = false;
  lo.augment = invp::data::eval_config(invp::data::small_image_preset(f.cfg.input_size, 1));
  invp::data::Loader loader(ds, lo);
  loader.start_epoch(1);
  std::vector<torch::Tensor> feats;
  torch::NoGradGuard ng;
  while (auto b = loader.next()) feats.push_back(net->forward(b->images));
  auto z = torch::cat(feats);
  z = z / z.norm(2, {1}, true);
  ASSERT_EQ(z.size(0), graph.size(0));
  auto expected = invp::graph::KnnGraph::build(z, f.cfg.knn).neighbors;
  auto from_bank = invp::graph::KnnGraph::build(bank, f.cfg.knn).neighbors;
  auto share = [](const torch::Tensor& a, const torch::Tensor& b) {  // of a's edges found in b's rows
    return (a.unsqueeze(2) == b.unsqueeze(1)).any(2).to(torch::kDouble).mean().item<double>();
  };
  EXPECT_GE(share(graph, expected), 0.99);  // near-ties in float32 aside
  EXPECT_LT(share(graph, from_bank), 0.9);
}

// The epoch's files are written in the background: a write that fails (a full disk,
// tests/full_disk.h) still fails the run with the file's name, leaves the previous epoch's
// model.pt and checkpoint.pt intact, and the run resumes from that checkpoint.
TEST(Trainer, FailedBackgroundWriteFailsTheRunAndKeepsTheCheckpoint) {
  invp::apply_thread_budget(1);
  Fixture f("bgfail");
  auto dir = f.root / "run";
  Trainer(f.cfg, dir.string()).run({}, /*until_epoch=*/1);
  const auto ckpt = invp::test::file_bytes(dir / "checkpoint.pt");
  {
    Trainer t(f.cfg, dir.string());
    int epochs_reported = 0;
    invp::test::expect_fails_cleanly_on_full_disk(dir / "model.pt", [&] {
      t.run([&](const auto&) { ++epochs_reported; });
    });
    EXPECT_EQ(epochs_reported, 1);  // epoch 2 trained; only its write failed
  }
  EXPECT_TRUE(invp::test::file_bytes(dir / "checkpoint.pt") == ckpt);
  Trainer again(f.cfg, dir.string());
  EXPECT_EQ(again.start_epoch(), 2);
  EXPECT_EQ(again.run(), 2);
}

// A writer killed mid-write leaves "<file>.tmp.<pid>"; the next trainer on the directory
// clears those (and nothing else).
TEST(Trainer, ClearsTemporaryFilesOfAKilledWriter) {
  Fixture f("leftover");
  auto dir = f.root / "run";
  fs::create_directories(dir);
  for (auto name : {"checkpoint.pt.tmp.123", "model.pt.tmp.9", "notes.tmp.1"}) std::ofstream(dir / name) << "x";
  Trainer t(f.cfg, dir.string());
  EXPECT_FALSE(fs::exists(dir / "checkpoint.pt.tmp.123"));
  EXPECT_FALSE(fs::exists(dir / "model.pt.tmp.9"));
  EXPECT_TRUE(fs::exists(dir / "notes.tmp.1"));  // not one of the trainer's files
}

// On a GPU: the same tiny run on CUDA (full float32, --profile's synchronised timing) starts
// where the CPU run starts, then learns as it does.
TEST(Trainer, CudaRunMatchesCpuStartAndLearns) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  invp::apply_thread_budget(2);
  Fixture f("cuda");
  f.learning_run(6, 2, 6);
  f.cfg.precision = "fp32";
  std::vector<invp::train::EpochMetrics> cpu, gpu;
  auto one = f.cfg;
  one.epochs = 1;
  Trainer(one, (f.root / "cpu").string()).run([&](const auto& m) { cpu.push_back(m); });
  f.cfg.device = "cuda";
  f.cfg.profile = true;
  Trainer(f.cfg, (f.root / "gpu").string()).run([&](const auto& m) { gpu.push_back(m); });
  ASSERT_EQ(cpu.size(), 1u);
  ASSERT_EQ(gpu.size(), 6u);
  EXPECT_NEAR(gpu[0].loss, cpu[0].loss, 0.01 * cpu[0].loss);
  EXPECT_LT(gpu.back().instance, gpu.front().instance);
  EXPECT_NE(gpu.back().invariance, 0);
  EXPECT_GT(gpu.back().knn_top1, 0.5);
  EXPECT_GT(gpu[1].forward + gpu[1].backward, 0);
  // The model trained on the GPU loads on the CPU.
  EXPECT_NO_THROW(invp::model::load_model((f.root / "gpu/model.pt").string()));
}

// A checkpoint written on a full disk (tests/full_disk.h): a clear error naming it, and the
// previous checkpoint intact, so the run can still resume.
TEST(Checkpoint, FullDiskKeepsThePreviousCheckpoint) {
  auto dir = fs::temp_directory_path() / ("invp_ckpt_full_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto path = dir / "checkpoint.pt";
  invp::model::Encoder net(invp::model::EncoderConfig{18, "small", 8, 1, "mlp-bn", 32});
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  auto bank = torch::randn({5000, 32});
  auto graph = torch::randint(0, 5000, {5000, 4}, torch::kLong);
  invp::train::write_checkpoint(path.string(), {2, 0, "{}", {}, {}}, *net, opt, bank, graph);
  invp::test::expect_fails_cleanly_on_full_disk(path, [&] {
    invp::train::write_checkpoint(path.string(), {3, 0, "{}", {}, {}}, *net, opt, bank * 2, graph);
  });
  EXPECT_EQ(invp::train::read_checkpoint(path.string()).epoch, 2);
  fs::remove_all(dir);
}

// The background writer's snapshot: its bytes are the live state's at capture time, whatever
// training does afterwards. Checked before the optimiser's first step (no momentum yet), after
// it (the snapshot creates its buffers) and after another (it copies into them): model.pt bytes
// equal serialize_model of the live model then, and checkpoint.pt loads into exactly the
// weights, BatchNorm statistics, momentum, bank, graph and meta that a direct checkpoint gives.
TEST(Checkpoint, SnapshotHoldsTheStateAtCaptureTime) {
  using invp::train::momentum_buffer;
  auto dir = fs::temp_directory_path() / ("invp_ckpt_snap_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  invp::model::EncoderConfig ec{18, "small", 8, 1, "mlp-bn", 32};
  torch::manual_seed(1);
  invp::model::Encoder net(ec);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(5e-4));
  auto bank = torch::randn({300, 32});
  auto graph = torch::randint(0, 300, {300, 4}, torch::kLong);
  auto step = [&] {
    opt.zero_grad();
    net->train();
    net->forward(torch::randn({8, 1, 28, 28})).pow(2).sum().backward();
    opt.step();
    bank.mul_(0.5).add_(torch::randn_like(bank));
    graph.random_(0, 300);
  };
  // The snapshot's own initialisation must not move the run's random stream.
  torch::manual_seed(7);
  auto expected = torch::rand({4});
  torch::manual_seed(7);
  invp::train::CheckpointSnapshot snap(ec, torch::kCPU);
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected));

  struct Loaded {
    invp::train::Checkpoint c;
    invp::model::Encoder n{nullptr};
    std::unique_ptr<torch::optim::SGD> o;
    torch::Tensor b, g;
  };
  auto load = [&](const std::string& bytes, const std::string& name) {
    auto path = (dir / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    Loaded l;
    l.c = invp::train::read_checkpoint(path);
    l.n = invp::model::Encoder(ec);
    l.o = std::make_unique<torch::optim::SGD>(l.n->parameters(), torch::optim::SGDOptions(1).momentum(0.9));
    l.b = torch::zeros_like(bank);
    l.g = torch::zeros_like(graph);
    invp::train::load_checkpoint_into(l.c, *l.n, *l.o, l.b, l.g);
    return l;
  };
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    invp::train::Checkpoint meta{round + 2, 7 * round, "{\"round\":" + std::to_string(round) + "}", {}, {}};
    auto live_model = invp::model::serialize_model(net);
    auto live_ckpt = invp::train::serialize_checkpoint(meta, *net, opt, bank, graph);
    snap.capture(meta, *net, opt, bank, graph);
    step();  // training goes on: the snapshot must not follow it
    EXPECT_TRUE(snap.model_bytes() == live_model);
    auto s1 = load(snap.checkpoint_bytes(), "snap.pt"), s2 = load(live_ckpt, "live.pt");
    EXPECT_EQ(s1.c.epoch, meta.epoch);
    EXPECT_EQ(s1.c.step, meta.step);
    EXPECT_EQ(s1.c.config_json, meta.config_json);
    EXPECT_TRUE(torch::equal(s1.b, s2.b));
    EXPECT_TRUE(torch::equal(s1.g, s2.g));
    EXPECT_FALSE(torch::equal(s1.b, bank));
    auto p1 = s1.n->parameters(), p2 = s2.n->parameters(), bf1 = s1.n->buffers(), bf2 = s2.n->buffers();
    ASSERT_EQ(p1.size(), p2.size());
    for (size_t i = 0; i < p1.size(); ++i) {
      EXPECT_TRUE(torch::equal(p1[i], p2[i])) << i;
      auto m1 = momentum_buffer(*s1.o, p1[i]), m2 = momentum_buffer(*s2.o, p2[i]);
      ASSERT_EQ(m1.defined(), m2.defined()) << i;
      EXPECT_EQ(m1.defined(), round > 0) << i;
      if (m1.defined()) {
        EXPECT_TRUE(torch::equal(m1, m2)) << i;
      }
    }
    ASSERT_EQ(bf1.size(), bf2.size());
    for (size_t i = 0; i < bf1.size(); ++i) EXPECT_TRUE(torch::equal(bf1[i], bf2[i])) << i;
  }
  fs::remove_all(dir);
}

// A key added after the first release: a config.json written before it existed (the keys
// erased) hashes like today's defaults, so old runs still resume; setting it through `set`
// changes the hash against `a`, and the value survives the config.json round trip (read
// back by `get`).
template <class Set, class Get>
void expect_later_key(const std::vector<std::string>& keys, Set set, Get get, const TrainConfig& a = {}) {
  SCOPED_TRACE(keys.front());
  auto old = nlohmann::json::parse(a.to_json());
  for (const auto& k : keys) {
    ASSERT_TRUE(old.contains(k)) << k;
    old.erase(k);
  }
  EXPECT_EQ(TrainConfig::from_json(old.dump(), "old.json").config_hash(), a.config_hash());
  TrainConfig b = a;
  set(b);
  EXPECT_NE(b.config_hash(), a.config_hash());
  auto back = TrainConfig::from_json(b.to_json(), "config.json");
  EXPECT_EQ(get(back), get(b));
  EXPECT_EQ(back.config_hash(), b.config_hash());
  b.validate();
}

TEST(TrainConfig, LaterKeysHashOnlyWhenSetAndAreValidated) {
  TrainConfig a;
  EXPECT_EQ(TrainConfig::from_json(a.to_json(), "config.json").config_hash(), a.config_hash());
  expect_later_key({"crop_scale", "flip"}, [](TrainConfig& c) { c.crop_scale = 0.5f; c.flip = 0.5f; },
                   [](const TrainConfig& c) { return std::make_pair(c.crop_scale, c.flip); });
  expect_later_key({"graph_search", "graph_probes"}, [](TrainConfig& c) { c.graph_search = "ivf"; },
                   [](const TrainConfig& c) { return c.graph_search; });
  TrainConfig ivf8 = a;  // the probe count must change the hash of an IVF config, not just the default's
  ivf8.graph_search = "ivf";
  expect_later_key({"graph_probes"}, [](TrainConfig& c) { c.graph_probes = 16; },
                   [](const TrainConfig& c) { return c.graph_probes; }, ivf8);
  expect_later_key({"positives"}, [](TrainConfig& c) { c.positives = "oracle"; },
                   [](const TrainConfig& c) { return c.positives; });
  expect_later_key({"graph_features"}, [](TrainConfig& c) { c.graph_features = "recomputed"; },
                   [](const TrainConfig& c) { return c.graph_features; });
  expect_later_key({"milestones", "gamma"}, [](TrainConfig& c) { c.schedule = "step"; c.milestones = {3, 5}; },
                   [](const TrainConfig& c) { return c.milestones; });
  // Run keys (how, not what, is trained) never change the hash; the new ones are validated.
  TrainConfig run = a;
  run.precision = "fp32";
  run.profile = true;
  run.device = "cuda";
  EXPECT_EQ(run.config_hash(), a.config_hash());
  auto back = TrainConfig::from_json(run.to_json(), "config.json");
  EXPECT_EQ(back.precision, "fp32");
  EXPECT_TRUE(back.profile);
  // ... and each is validated.
  const std::vector<std::function<void(TrainConfig&)>> bad = {
      [](TrainConfig& c) { c.crop_scale = 0; },        [](TrainConfig& c) { c.flip = 1.5f; },
      [](TrainConfig& c) { c.graph_probes = 0; },      [](TrainConfig& c) { c.graph_search = "hnsw"; },
      [](TrainConfig& c) { c.positives = "labels"; },  [](TrainConfig& c) { c.precision = "fp16"; },
      [](TrainConfig& c) { c.precision = "bf16"; c.device = "cuda"; },
      [](TrainConfig& c) { c.graph_features = "eval"; },
      [](TrainConfig& c) { c.graph_features = "recomputed"; c.graph = "online"; },
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    TrainConfig c = a;
    bad[i](c);
    EXPECT_THROW(c.validate(), invp::Error) << "bad config " << i;
  }
}
