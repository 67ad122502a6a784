// The training recipe a run asks for is the one it trains with: the augmentation the trainer's
// loader draws (flips and blurs of a fixed image counted over many draws), the eval transform
// that model.json hands to embed and query (resize to size / 0.875, then centre crop), and the
// recipe recorded under model.json's "augment".
#include <invp/core/error.h>
#include <invp/data/augment.h>
#include <invp/data/dataset.h>
#include <invp/data/loader.h>
#include <invp/model/model_io.h>
#include <invp/train/trainer.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <random>

#include "synthetic_idx.h"

namespace fs = std::filesystem;
using invp::train::TrainConfig;
using invp::train::Trainer;

namespace {
// n copies of one grey image: white left half, black right half (a vertical step edge).
class StepEdge : public invp::data::Dataset {
 public:
  StepEdge(int side, size_t n) : side_(side), n_(n) {}
  size_t size() const override { return n_; }
  invp::data::Sample get(size_t) const override {
    invp::data::Sample s;
    s.image.height = s.image.width = side_;
    s.image.channels = 1;
    s.image.pixels.assign(size_t(side_) * side_, 0);
    for (int y = 0; y < side_; ++y)
      for (int x = 0; x < side_ / 2; ++x) s.image.pixels[size_t(y * side_ + x)] = 255;
    s.label = 0;
    return s;
  }
  int channels() const override { return 1; }
  int32_t label(size_t) const override { return 0; }
  std::string kind() const override { return "test"; }

 private:
  int side_;
  size_t n_;
};

struct RunDir {
  fs::path root;
  TrainConfig cfg;
  explicit RunDir(const std::string& name) {
    root = fs::temp_directory_path() / ("invp_recipe_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(root);
    invp_test::write_idx(root / "data", "train", 128, 1);
    cfg.data = (root / "data").string() + ":train";
    cfg.width = 8;
    cfg.dim = 16;
    cfg.background = 64;
    cfg.hard_positives = 4;
    cfg.batch_size = 64;
    cfg.epochs = 1;
    cfg.precision = "fp32";
  }
  ~RunDir() { fs::remove_all(root); }
};

struct ViewStats {
  int flipped = 0, blurred = 0, views = 0;
};

// Draws `n` training views of the step edge through the loader `opts` describe and counts the
// mirrored ones (dark left) and the softened ones (no single column step carries 90 % of the
// edge's height). Only flip and blur may vary: the caller turns the rest of the recipe off.
ViewStats draw_views(invp::data::LoaderOptions opts, int side, int n) {
  opts.batch_size = 64;
  opts.drop_last = false;
  opts.shards = 1;
  opts.shard = 0;
  auto ds = std::make_shared<StepEdge>(side, size_t(n));
  invp::data::Loader loader(ds, opts);
  loader.start_epoch(1);
  ViewStats st;
  const float height = 1.f / opts.augment.std[0];  // the edge's height after normalisation
  while (auto b = loader.next()) {
    auto img = b->images.select(1, 0);  // N x H x W
    for (int64_t i = 0; i < img.size(0); ++i) {
      auto row = img[i][img.size(1) / 2];
      const int w = int(row.size(0));
      bool flipped = row.slice(0, 0, w / 4).mean().item<float>() < row.slice(0, 3 * w / 4, w).mean().item<float>();
      float step = (row.slice(0, 1, w) - row.slice(0, 0, w - 1)).abs().max().item<float>();
      st.flipped += flipped;
      st.blurred += step < 0.9f * height;
      ++st.views;
    }
  }
  return st;
}
}  // namespace

TEST(Recipe, ImagenetRunsLoaderFlipsAndBlursAndSmallDoesNot) {
  RunDir r("views");
  r.cfg.input_size = 224;  // the reference's blur range is in 224-px units
  r.cfg.crop_scale = 1;    // whole image: only flip and blur move the edge
  r.cfg.jitter = 0;
  r.cfg.grayscale = 0;
  r.cfg.augment = "imagenet";
  const int n = 256;
  auto st = draw_views(Trainer(r.cfg, (r.root / "in").string()).loader_options(), 224, n);
  ASSERT_EQ(st.views, n);
  // Flip p 0.5: 256 draws fall in [0.35, 0.65] unless something is wrong (~5 sd).
  EXPECT_GT(st.flipped, int(0.35 * n));
  EXPECT_LT(st.flipped, int(0.65 * n));
  // Blur p 0.5 with sigma uniform in [0.1, 2]: sigma below ~0.4 leaves a 90 % step, so about
  // 0.5 × 1.6 / 1.9 ≈ 0.42 of the views are softened.
  EXPECT_GT(st.blurred, int(0.28 * n));
  EXPECT_LT(st.blurred, int(0.56 * n));
  // The small recipe, same strengths otherwise: neither.
  r.cfg.augment = "small";
  auto sm = draw_views(Trainer(r.cfg, (r.root / "small").string()).loader_options(), 224, n);
  EXPECT_EQ(sm.flipped, 0);
  EXPECT_EQ(sm.blurred, 0);
  // A strength set by flag overrides the recipe's.
  r.cfg.flip = 1;
  auto all = draw_views(Trainer(r.cfg, (r.root / "flip").string()).loader_options(), 224, 64);
  EXPECT_EQ(all.flipped, 64);
}

TEST(Recipe, ImagenetEvalTransformResizes256ThenCrops224) {
  TrainConfig c;
  c.augment = "imagenet";
  c.input_size = 224;
  auto ev = invp::data::eval_config(c.augment_config(3));
  EXPECT_FLOAT_EQ(ev.resize_ratio, 224.f / 256.f);
  EXPECT_EQ(ev.mean, (std::vector<float>{0.485f, 0.456f, 0.406f}));
  // A 512-px image of constant 2×2 blocks halves exactly to 256 (bilinear at the block
  // centres), then the centre 224 starts 16 px in: out(y, x) = block(y + 16, x + 16).
  auto value = [](int by, int bx) { return uint8_t((by * 7 + bx * 13) % 251); };
  invp::data::Image big;
  big.height = big.width = 512;
  big.channels = 1;
  big.pixels.resize(512 * 512);
  for (int y = 0; y < 512; ++y)
    for (int x = 0; x < 512; ++x) big.pixels[size_t(y * 512 + x)] = value(y / 2, x / 2);
  std::mt19937_64 rng(0);
  auto out = invp::data::augment(big, ev, rng);
  ASSERT_EQ(out.height, 224);
  ASSERT_EQ(out.width, 224);
  int wrong = 0;
  for (int y = 0; y < 224; ++y)
    for (int x = 0; x < 224; ++x) wrong += out.pixels[size_t(y * 224 + x)] != value(y + 16, x + 16);
  EXPECT_EQ(wrong, 0);
  // The small recipe evaluates at the input size: no resize.
  TrainConfig s;
  s.input_size = 32;
  EXPECT_FLOAT_EQ(invp::data::eval_config(s.augment_config(3)).resize_ratio, 1.f);
}

TEST(Recipe, ModelJsonNamesTheRecipeAndItsEvalResize) {
  RunDir r("modeljson");
  r.cfg.augment = "imagenet";
  r.cfg.input_size = 56;
  r.cfg.hue = 0.05f;
  Trainer(r.cfg, (r.root / "run").string()).run();
  std::ifstream in(r.root / "run/model.json");
  auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("augment").at("name"), "imagenet");
  EXPECT_FLOAT_EQ(j.at("augment").at("flip").get<float>(), 0.5f);
  EXPECT_FLOAT_EQ(j.at("augment").at("blur").at("p").get<float>(), 0.5f);
  EXPECT_FLOAT_EQ(j.at("augment").at("jitter").at("hue").get<float>(), 0.05f);  // the flag's
  EXPECT_EQ(j.at("eval_transform").at("resize"), 64);  // 56 / 0.875
  EXPECT_EQ(j.at("eval_transform").at("center_crop"), 56);
  auto info = invp::model::info_from_json(nlohmann::json(j).dump(), "model.json");
  EXPECT_EQ(info.resize, 64);
  EXPECT_NE(info.augment.find("imagenet"), std::string::npos);
  // config.json records the resolved strengths, and reads back to the same config.
  std::ifstream cj(r.root / "run/config.json");
  std::stringstream text;
  text << cj.rdbuf();
  auto back = TrainConfig::from_json(text.str(), "config.json");
  EXPECT_FLOAT_EQ(back.blur, 0.5f);
  EXPECT_EQ(back.config_hash(), r.cfg.config_hash());
}

TEST(Recipe, StrengthsOutOfRangeAreRefused) {
  for (auto set : std::vector<std::function<void(TrainConfig&)>>{
           [](TrainConfig& c) { c.augment = "simclr"; }, [](TrainConfig& c) { c.hue = 0.6f; },
           [](TrainConfig& c) { c.blur = 2; }, [](TrainConfig& c) { c.grayscale = -0.5f; },
           [](TrainConfig& c) { c.jitter = 1.5f; }}) {
    TrainConfig c;
    set(c);
    EXPECT_THROW(c.validate(), invp::Error);
  }
}
