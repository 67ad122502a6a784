#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <unistd.h>

#include <invp/core/error.h>
#include <invp/data/augment.h>
#include <invp/data/montage.h>

using namespace invp::data;

namespace {

Image make_image(int h, int w, int c, uint64_t seed) {
  Image im{h, w, c, {}};
  im.pixels.resize(size_t(h) * w * c);
  std::mt19937_64 rng(seed);
  for (auto& p : im.pixels) p = uint8_t(rng() & 0xff);
  return im;
}

}  // namespace

TEST(Augment, CropAreaAndRatioWithinBounds) {
  AugmentConfig cfg = small_image_preset(32, 3);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 5000; ++i) {
    CropBox b = sample_crop(28, 28, cfg, rng);
    ASSERT_GE(b.y, 0);
    ASSERT_GE(b.x, 0);
    ASSERT_LE(b.y + b.h, 28);
    ASSERT_LE(b.x + b.w, 28);
    double frac = double(b.h) * b.w / (28.0 * 28.0);
    double ratio = double(b.w) / b.h;
    // Rounding a small crop to whole pixels can move it a little past the nominal range.
    EXPECT_GE(frac, 0.2 * 0.7) << b.h << "x" << b.w;
    EXPECT_LE(frac, 1.0);
    EXPECT_GE(ratio, 0.75 * 0.8) << b.h << "x" << b.w;
    EXPECT_LE(ratio, 4.0 / 3 * 1.25) << b.h << "x" << b.w;
  }
}

TEST(Augment, CropFallbackOnExtremeAspect) {
  AugmentConfig cfg;
  cfg.scale_min = 0.99f;  // long thin image: no sampled crop can fit, use the centre fallback
  std::mt19937_64 rng(1);
  CropBox b = sample_crop(10, 200, cfg, rng);
  EXPECT_EQ(b.h, 10);
  EXPECT_EQ(b.w, int(std::lround(10 * 4.0 / 3)));
  EXPECT_EQ(b.x, (200 - b.w) / 2);
}

TEST(Augment, OutputSizeAndChannels) {
  std::mt19937_64 rng(3);
  Image grey = make_image(28, 28, 1, 1), rgb = make_image(40, 30, 3, 2);
  Image a = augment(grey, small_image_preset(32, 1), rng);
  EXPECT_EQ(a.height, 32);
  EXPECT_EQ(a.width, 32);
  EXPECT_EQ(a.channels, 1);
  EXPECT_EQ(a.pixels.size(), 32u * 32u);
  Image b = augment(rgb, imagenet_preset(), rng);
  EXPECT_EQ(b.height, 224);
  EXPECT_EQ(b.channels, 3);
}

TEST(Augment, GrayscaleReplicatesChannels) {
  AugmentConfig cfg = small_image_preset(32, 3);
  cfg.grayscale_p = 1.f;
  std::mt19937_64 rng(5);
  Image out = augment(make_image(32, 32, 3, 9), cfg, rng);
  for (size_t i = 0; i < out.pixels.size(); i += 3) {
    ASSERT_EQ(out.pixels[i], out.pixels[i + 1]);
    ASSERT_EQ(out.pixels[i], out.pixels[i + 2]);
  }
}

TEST(Augment, SameSeedSameOutputDifferentSeedDifferent) {
  AugmentConfig cfg = imagenet_preset();
  cfg.size = 48;
  Image in = make_image(64, 80, 3, 11);
  std::mt19937_64 r1(42), r2(42), r3(43);
  Image a = augment(in, cfg, r1), b = augment(in, cfg, r2), c = augment(in, cfg, r3);
  EXPECT_EQ(a.pixels, b.pixels);
  EXPECT_NE(a.pixels, c.pixels);
}

TEST(Augment, JitterChangesColourButNotGeometry) {
  AugmentConfig cfg;
  cfg.scale_min = cfg.scale_max = 1.f;
  cfg.ratio_min = cfg.ratio_max = 1.f;
  cfg.grayscale_p = 0.f;
  cfg.size = 16;
  Image in = make_image(16, 16, 3, 4);
  std::mt19937_64 rng(8);
  Image out = augment(in, cfg, rng);
  EXPECT_NE(out.pixels, in.pixels);
  cfg.jitter_p = 0.f;  // full-image crop at the same size and nothing else: identity
  EXPECT_EQ(augment(in, cfg, rng).pixels, in.pixels);
}

TEST(Augment, EvalDeterministicAndSized) {
  AugmentConfig cfg = eval_config(imagenet_preset());
  EXPECT_FALSE(cfg.train);
  Image in = make_image(300, 400, 3, 12);
  std::mt19937_64 r1(1), r2(999);
  Image a = augment(in, cfg, r1), b = augment(in, cfg, r2);
  EXPECT_EQ(a.height, 224);
  EXPECT_EQ(a.width, 224);
  EXPECT_EQ(a.pixels, b.pixels);
  // Same size with resize_ratio 1: no change at all.
  AugmentConfig small = eval_config(small_image_preset(28, 1));
  Image g = make_image(28, 28, 1, 5);
  EXPECT_EQ(augment(g, small, r1).pixels, g.pixels);
}

TEST(Augment, NormaliseValues) {
  Image im{1, 2, 3, {0, 255, 51, 255, 0, 102}};
  AugmentConfig cfg;
  cfg.mean = {0.5f, 0.f, 0.2f};
  cfg.std = {0.5f, 1.f, 0.1f};
  float out[6];
  normalise_into(im, cfg, out);
  // CHW: channel 0 = pixels 0 and 255.
  EXPECT_NEAR(out[0], -1.f, 1e-5);
  EXPECT_NEAR(out[1], 1.f, 1e-5);
  EXPECT_NEAR(out[2], 1.f, 1e-5);
  EXPECT_NEAR(out[3], 0.f, 1e-5);
  EXPECT_NEAR(out[4], (0.2f - 0.2f) / 0.1f, 1e-4);
  EXPECT_NEAR(out[5], (0.4f - 0.2f) / 0.1f, 1e-4);
  AugmentConfig bad;
  bad.mean = {0.1f, 0.2f};
  EXPECT_THROW(normalise_into(im, bad, out), invp::Error);
}

TEST(Augment, RejectsEmptyImage) {
  std::mt19937_64 rng(1);
  EXPECT_THROW(augment(Image{}, AugmentConfig{}, rng), invp::Error);
}

TEST(Montage, WritesDecodablePng) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("invp_montage_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<Image> tiles = {make_image(28, 28, 1, 1), make_image(32, 32, 3, 2),
                              make_image(10, 20, 3, 3), make_image(28, 28, 1, 4),
                              make_image(28, 28, 1, 5)};
  std::vector<std::string> caps = {"zero", "one", "a rather long caption", "3"};
  const std::string out = (dir / "m.png").string();
  write_montage(tiles, caps, 3, 64, out);
  cv::Mat m = cv::imread(out, cv::IMREAD_COLOR);
  ASSERT_FALSE(m.empty());
  EXPECT_EQ(m.cols, 3 * (64 + kMontagePad) + kMontagePad);
  EXPECT_EQ(m.rows, 2 * (64 + kMontageCaptionH + kMontagePad) + kMontagePad);
  EXPECT_FALSE(fs::exists(out + ".tmp"));
  EXPECT_THROW(write_montage(tiles, caps, 3, 64, (dir / "no/such/dir/m.png").string()),
               invp::Error);
  fs::remove_all(dir);
}
