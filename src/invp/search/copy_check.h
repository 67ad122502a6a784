// A label-free check of an embedding on a user's own images: is an image found again from a
// distorted copy of itself? A sample of the collection is embedded; distorted copies of some of
// its items (data/distort.h) are searched for among it (cosine, exact), and recall@1 and
// recall@k count how often the original comes back first and in the top k. The same search over
// raw pixels (the model's input, pooled to at most 32 px a side, centred on the sample's mean,
// cosine) is the yardstick: an embedding that does not beat it has not learned what makes these
// images these images.
#pragma once
#include <invp/data/dataset.h>
#include <invp/data/distort.h>
#include <invp/search/embedder.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace invp::search {

struct CopyCheckOptions {
  int64_t collection = 2000;  // items searched among: a seeded random sample of the source
  int64_t queries = 500;      // of them, how many get distorted copies (each distortion)
  int k = 5;
  std::vector<data::Distortion> distortions = data::all_distortions();
  uint64_t seed = 0;
};

struct CopyCheckRow {
  std::string distortion;
  double model_at_1 = 0, model_at_k = 0, raw_at_1 = 0, raw_at_k = 0;
};

struct CopyCheckReport {
  int64_t collection = 0, queries = 0, skipped_bad = 0;
  int k = 0;
  std::vector<size_t> items;  // the sample's source indices; the first `queries` got copies
  std::vector<CopyCheckRow> rows;  // one a distortion, in the order asked
};

// Throws invp::Error when the source has fewer than two good items or k is below 1.
CopyCheckReport copy_check(Embedder& embedder, const data::Dataset& ds, const CopyCheckOptions& opts);

// The generator of distortion d's copies: copy i (of items[i]) is the i-th distort() drawn from it.
std::mt19937_64 copy_rng(uint64_t seed, data::Distortion d);

// The raw-pixel features copy_check() compares against: the model's input (N×C×S×S) pooled to
// at most 32 px a side and flattened (rows not yet centred or normalised).
torch::Tensor raw_input_features(const torch::Tensor& inputs);
// The same for `count` images, image_at(0..count-1), decoded and transformed a batch at a time
// (a collection of photos does not fit in memory decoded), with a progress bar named `label`.
torch::Tensor raw_features(const Embedder& embedder, int64_t count,
                           const std::function<data::Image(int64_t)>& image_at, const std::string& label);

}  // namespace invp::search
