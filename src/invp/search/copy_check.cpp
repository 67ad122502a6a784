#include <invp/core/error.h>
#include <invp/core/progress.h>
#include <invp/index/exact_knn.h>
#include <invp/model/encoder.h>
#include <invp/search/copy_check.h>

#include <algorithm>
#include <numeric>
#include <random>

namespace invp::search {
namespace {
constexpr int64_t kBatch = 256;
constexpr int64_t kRawSide = 32;

using model::normalise_rows;

// Features of `images`: the model's, and raw pixels' (before centring).
struct Encoded {
  torch::Tensor model, raw;
};

Encoded encode(Embedder& e, const std::vector<data::Image>& images) {
  auto in = e.inputs(images);
  return {e.embed(in), raw_input_features(in)};
}

// recall@1 and recall@k of queries q (row i is a copy of base row truth[i]).
std::pair<double, double> recall(const torch::Tensor& q, const torch::Tensor& base, const std::vector<int64_t>& truth,
                                 int k) {
  auto r = index::knn_inner_product(q, base, int(std::min<int64_t>(k, base.size(0))), false);
  auto idx = r.indices.contiguous();
  const auto* p = idx.data_ptr<int64_t>();
  const int64_t kk = idx.size(1);
  int64_t first = 0, any = 0;
  for (size_t i = 0; i < truth.size(); ++i) {
    const int64_t* row = p + int64_t(i) * kk;
    first += row[0] == truth[i];
    any += std::find(row, row + kk, truth[i]) != row + kk;
  }
  const double n = double(std::max<size_t>(1, truth.size()));
  return {first / n, any / n};
}
}  // namespace

std::mt19937_64 copy_rng(uint64_t seed, data::Distortion d) {
  return std::mt19937_64(seed * 0x9E3779B97F4A7C15ull + uint64_t(d) + 1);
}

torch::Tensor raw_input_features(const torch::Tensor& inputs) {
  auto x = inputs;
  if (x.size(2) > kRawSide || x.size(3) > kRawSide)
    x = torch::adaptive_avg_pool2d(x, {std::min(x.size(2), kRawSide), std::min(x.size(3), kRawSide)});
  return x.flatten(1).contiguous();
}

torch::Tensor raw_features(const Embedder& e, int64_t count, const std::function<data::Image(int64_t)>& image_at,
                           const std::string& label) {
  std::vector<torch::Tensor> parts;
  std::vector<data::Image> batch;
  Progress bar(label, count, "img");
  for (int64_t i = 0; i < count; ++i) {
    batch.push_back(image_at(i));
    if (int64_t(batch.size()) == kBatch || i + 1 == count) {
      parts.push_back(raw_input_features(e.inputs(batch)));
      batch.clear();
      bar.update(i + 1);
    }
  }
  bar.finish();
  if (parts.empty()) throw Error("", label + ": no images");
  return torch::cat(parts);
}

namespace {
// The collection: the first `want` good items of a seeded shuffle (bad ones are skipped),
// decoded a batch at a time (a folder of photos does not fit in memory decoded).
struct Sample {
  std::vector<size_t> items;  // source indices, in sample order
  torch::Tensor model, raw;   // their features; raw not yet centred
  int64_t skipped_bad = 0;
};

Sample embed_sample(Embedder& e, const data::Dataset& ds, size_t want, uint64_t seed, Progress& bar) {
  std::mt19937_64 rng(seed);
  std::vector<size_t> order(ds.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::shuffle(order.begin(), order.end(), rng);
  Sample s;
  std::vector<torch::Tensor> model, raw;
  std::vector<data::Image> batch;
  auto flush = [&] {
    if (batch.empty()) return;
    auto enc = encode(e, batch);
    model.push_back(enc.model);
    raw.push_back(enc.raw);
    batch.clear();
    bar.update(int64_t(s.items.size()));
  };
  for (size_t i = 0; i < order.size() && s.items.size() < want; ++i) {
    try {
      batch.push_back(ds.get(order[i]).image);
      s.items.push_back(order[i]);
    } catch (const Error&) {
      ++s.skipped_bad;
    }
    if (int64_t(batch.size()) == kBatch) flush();
  }
  flush();
  if (s.items.size() < 2) throw Error("", "copy check: the source has fewer than two good images");
  s.model = torch::cat(model);
  s.raw = torch::cat(raw);
  return s;
}
}  // namespace

CopyCheckReport copy_check(Embedder& e, const data::Dataset& ds, const CopyCheckOptions& opts) {
  if (opts.k < 1) throw Error("", "copy check: -k must be at least 1");
  if (opts.distortions.empty()) throw Error("", "copy check: no distortion to apply");
  const size_t want = size_t(std::max<int64_t>(2, opts.collection));
  const int64_t total = int64_t(std::min(want, ds.size()));
  Progress bar("copy check", total + int64_t(opts.distortions.size()) * std::clamp<int64_t>(opts.queries, 1, total),
               "img");
  auto s = embed_sample(e, ds, want, opts.seed, bar);
  const int64_t n = int64_t(s.items.size()), nq = std::clamp<int64_t>(opts.queries, 1, n);
  auto mean = s.raw.mean(0, true);
  auto raw_base = normalise_rows(s.raw - mean);
  std::vector<int64_t> truth(static_cast<size_t>(nq));  // copy i is of sample item i
  std::iota(truth.begin(), truth.end(), int64_t(0));
  int64_t done = n;
  CopyCheckReport rep;
  for (auto d : opts.distortions) {
    auto drng = copy_rng(opts.seed, d);
    std::vector<torch::Tensor> qm, qr;
    for (int64_t b = 0; b < nq; b += kBatch) {
      std::vector<data::Image> copies;
      for (int64_t i = b; i < std::min(nq, b + kBatch); ++i)
        copies.push_back(data::distort(ds.get(s.items[size_t(i)]).image, d, drng));
      auto enc = encode(e, copies);
      qm.push_back(enc.model);
      qr.push_back(enc.raw);
      bar.update(done += int64_t(copies.size()));
    }
    CopyCheckRow row;
    row.distortion = data::distortion_name(d);
    std::tie(row.model_at_1, row.model_at_k) = recall(torch::cat(qm), s.model, truth, opts.k);
    std::tie(row.raw_at_1, row.raw_at_k) = recall(normalise_rows(torch::cat(qr) - mean), raw_base, truth, opts.k);
    rep.rows.push_back(row);
  }
  bar.finish();
  rep.collection = n;
  rep.queries = nq;
  rep.k = opts.k;
  rep.skipped_bad = s.skipped_bad;
  rep.items = std::move(s.items);
  return rep;
}

}  // namespace invp::search
