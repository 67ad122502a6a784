// Distorted copies (data/distort.h) and the label-free copy check (search/copy_check.h): each
// distortion keeps the image's shape, changes its pixels and repeats with a seed; the check's
// recall figures equal a brute-force search over the same copies, for the model and for raw pixels.
#include <invp/core/error.h>
#include <invp/data/dataset.h>
#include <invp/data/decode.h>
#include <invp/data/distort.h>
#include <invp/search/copy_check.h>
#include <invp/search/embedder.h>

#include <gtest/gtest.h>

#include "search_fixtures.h"

using namespace invp;

namespace {
data::Image noise_image(int h, int w, int c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> px(size_t(h) * w * c);
  for (auto& p : px) p = uint8_t(rng() % 256);
  return data::to_image(px.data(), h, w, c);
}

// Rank of `truth` among base rows by cosine to q (rows unit length): 0 = first. Ties count against.
int64_t rank_of(const torch::Tensor& q, const torch::Tensor& base, int64_t truth) {
  auto s = torch::mv(base, q);
  const float own = s[truth].item<float>();
  int64_t above = 0;
  for (int64_t j = 0; j < base.size(0); ++j) above += j != truth && s[j].item<float>() >= own;
  return above;
}
}  // namespace

TEST(Distort, KeepsTheShapeChangesThePixelsAndRepeatsWithASeed) {
  for (int c : {1, 3}) {
    auto img = noise_image(24, 20, c, 5);
    for (auto d : data::all_distortions()) {
      std::mt19937_64 a(11), b(11);
      auto x = data::distort(img, d, a), y = data::distort(img, d, b);
      EXPECT_EQ(x.height, 24);
      EXPECT_EQ(x.width, 20);
      EXPECT_EQ(x.channels, c) << data::distortion_name(d);
      EXPECT_NE(x.pixels, img.pixels) << data::distortion_name(d);
      EXPECT_EQ(x.pixels, y.pixels) << data::distortion_name(d) << ": not repeatable";
      EXPECT_EQ(data::distortion_named(data::distortion_name(d)), d);
    }
    std::mt19937_64 rng(1);
    auto twice = data::distort(data::distort(img, data::Distortion::flip, rng), data::Distortion::flip, rng);
    EXPECT_EQ(twice.pixels, img.pixels);
  }
  EXPECT_THROW(data::distortion_named("rotate"), Error);
}

TEST(CopyCheck, EqualsABruteForceSearchOverTheSameCopies) {
  auto dir = invp_test::temp_dir("copies");
  auto src = invp_test::write_idx(dir, 150);
  search::Embedder e(invp_test::write_model(dir, 16, 3));
  auto ds = data::open_dataset(src, {1, false});
  search::CopyCheckOptions o;
  o.collection = 120;
  o.queries = 40;
  o.k = 3;
  o.seed = 9;
  o.distortions = {data::Distortion::crop, data::Distortion::jpeg, data::Distortion::mixed};
  auto r = search::copy_check(e, *ds, o);
  ASSERT_EQ(r.collection, 120);
  ASSERT_EQ(r.queries, 40);
  ASSERT_EQ(r.items.size(), 120u);
  ASSERT_EQ(r.rows.size(), 3u);
  std::vector<data::Image> sample;
  for (size_t i : r.items) sample.push_back(ds->get(i).image);
  auto base = e.embed_images(sample);
  auto raw = search::raw_input_features(e.inputs(sample));
  auto mean = raw.mean(0, true);
  auto unit = [](const torch::Tensor& x) { return x / x.norm(2, 1, true); };
  auto raw_base = unit(raw - mean);
  double found = 0;
  for (size_t d = 0; d < o.distortions.size(); ++d) {
    auto rng = search::copy_rng(o.seed, o.distortions[d]);
    std::vector<data::Image> copies;
    for (int64_t i = 0; i < r.queries; ++i) copies.push_back(data::distort(sample[size_t(i)], o.distortions[d], rng));
    auto q = e.embed_images(copies);
    auto qr = unit(search::raw_input_features(e.inputs(copies)) - mean);
    double m1 = 0, mk = 0, p1 = 0, pk = 0;
    for (int64_t i = 0; i < r.queries; ++i) {
      auto rm = rank_of(q[i], base, i), rp = rank_of(qr[i], raw_base, i);
      m1 += rm == 0, mk += rm < o.k, p1 += rp == 0, pk += rp < o.k;
    }
    const auto& row = r.rows[d];
    EXPECT_EQ(row.distortion, data::distortion_name(o.distortions[d]));
    EXPECT_NEAR(row.model_at_1, m1 / r.queries, 1e-9) << row.distortion;
    EXPECT_NEAR(row.model_at_k, mk / r.queries, 1e-9) << row.distortion;
    EXPECT_NEAR(row.raw_at_1, p1 / r.queries, 1e-9) << row.distortion;
    EXPECT_NEAR(row.raw_at_k, pk / r.queries, 1e-9) << row.distortion;
    EXPECT_LE(row.model_at_1, row.model_at_k);
    found += row.model_at_k + row.raw_at_k;
  }
  EXPECT_GT(found, 0) << "no copy found at all: the comparison above would prove little";
  fs::remove_all(dir);
}

TEST(CopyCheck, RefusesWhatItCannotMeasure) {
  auto dir = invp_test::temp_dir("copies_bad");
  auto src = invp_test::write_idx(dir, 20);
  search::Embedder e(invp_test::write_model(dir, 8, 1));
  auto ds = data::open_dataset(src, {1, false});
  search::CopyCheckOptions o;
  o.k = 0;
  EXPECT_THROW(search::copy_check(e, *ds, o), Error);
  o.k = 5;
  o.distortions.clear();
  EXPECT_THROW(search::copy_check(e, *ds, o), Error);
  auto one = data::subset(ds, 0, 1);
  EXPECT_THROW(search::copy_check(e, *one, search::CopyCheckOptions{}), Error);
  fs::remove_all(dir);
}
