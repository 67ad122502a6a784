#include <invp/core/error.h>
#include <invp/core/log.h>
#include <invp/data/fetch.h>
#include <invp/data/montage.h>
#include <invp/index/exact_knn.h>
#include <invp/model/encoder.h>
#include <invp/search/copy_check.h>
#include <invp/search/index_dir.h>
#include <invp/search/report.h>

#include <cstdio>
#include <map>

namespace invp::search {

std::string hit_caption(const Hit& hit) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f ", hit.score);
  return b + (!hit.category.empty() ? hit.category : hit.label >= 0 ? std::to_string(hit.label) : "-");
}

void write_hits_montage(const std::vector<data::Image>& first_tiles,
                        const std::vector<std::string>& first_captions,
                        const std::vector<std::vector<Hit>>& rows, int cols, int tile_px,
                        const std::string& out_png) {
  data::ImageFetcher fetch(3);
  std::vector<data::Image> tiles;
  std::vector<std::string> captions;
  for (size_t r = 0; r < rows.size(); ++r) {
    if (r < first_tiles.size()) {
      tiles.push_back(first_tiles[r]);
      captions.push_back(r < first_captions.size() ? first_captions[r] : "query");
    }
    for (const auto& hit : rows[r]) {
      data::Image img;
      try {
        img = fetch.get(hit.path);
      } catch (const Error& err) {
        log::warn(std::string("montage: ") + err.what());
      }
      tiles.push_back(std::move(img));
      captions.push_back(hit_caption(hit));
    }
    while (tiles.size() % size_t(cols) != 0) tiles.emplace_back(), captions.emplace_back();
  }
  data::write_montage(tiles, captions, cols, tile_px, out_png);
}

eval::RetrievalScores evaluate_retrieval(IndexHandle& index, const torch::Tensor& queries,
                                         const torch::Tensor& labels,
                                         const std::vector<int64_t>& exclude, int k) {
  std::map<int32_t, int64_t> per_label;
  for (int32_t l : index.labels()) ++per_label[l];
  eval::RetrievalMeter meter(k);
  const int64_t B = 1024;
  for (int64_t s = 0; s < queries.size(0); s += B) {
    const int64_t n = std::min(B, queries.size(0) - s);
    std::vector<int64_t> ex;
    if (!exclude.empty()) ex.assign(exclude.begin() + s, exclude.begin() + s + n);
    auto hits = index.search(queries.narrow(0, s, n).contiguous(), k, ex);
    for (int64_t i = 0; i < n; ++i) {
      std::vector<int32_t> ranked;
      for (auto& x : hits[size_t(i)]) ranked.push_back(x.label);
      const int32_t ql = int32_t(labels[s + i].item<int64_t>());
      auto it = per_label.find(ql);
      const int64_t rel = it == per_label.end() ? 0 : it->second - (exclude.empty() ? 0 : 1);
      meter.add(ranked, ql, rel);
    }
  }
  return meter.result();
}

eval::RetrievalScores exact_retrieval(const torch::Tensor& base, const torch::Tensor& base_labels,
                                      const torch::Tensor& queries, const torch::Tensor& labels, int k,
                                      bool leave_one_out) {
  std::map<int32_t, int64_t> per_label;
  auto bl = base_labels.to(torch::kLong).contiguous();
  for (int64_t i = 0; i < bl.size(0); ++i) ++per_label[int32_t(bl[i].item<int64_t>())];
  auto nn = index::knn_inner_product(queries.to(torch::kFloat).contiguous(), base.to(torch::kFloat).contiguous(),
                                     int(std::min<int64_t>(k, base.size(0) - (leave_one_out ? 1 : 0))),
                                     leave_one_out);
  auto hit_labels = bl.index({nn.indices.flatten()}).view(nn.indices.sizes());
  eval::RetrievalMeter meter(k);
  for (int64_t i = 0; i < queries.size(0); ++i) {
    std::vector<int32_t> ranked;
    for (int64_t j = 0; j < hit_labels.size(1); ++j) ranked.push_back(int32_t(hit_labels[i][j].item<int64_t>()));
    const int32_t ql = int32_t(labels[i].item<int64_t>());
    auto it = per_label.find(ql);
    meter.add(ranked, ql, it == per_label.end() ? 0 : it->second - (leave_one_out ? 1 : 0));
  }
  return meter.result();
}

eval::RetrievalScores raw_pixel_retrieval(IndexHandle& index, const torch::Tensor& labels, int k,
                                          const data::Dataset* queries, const torch::Tensor& query_ids) {
  auto& e = index.embedder();
  data::ImageFetcher fetch(e.channels());
  const auto& ids = index.ids();
  auto base = raw_features(e, int64_t(ids.size()),
                           [&](int64_t i) { return fetch.get(index.describe(ids[size_t(i)], 0).path); }, "raw pixels");
  auto mean = base.mean(0, true);
  base = model::normalise_rows(base - mean);
  std::vector<int64_t> l(index.labels().begin(), index.labels().end());
  auto base_labels = torch::tensor(l, torch::kLong);
  if (!queries)
    return exact_retrieval(base, base_labels, base.narrow(0, 0, labels.size(0)), labels, k, /*leave_one_out=*/true);
  auto q = raw_features(e, labels.size(0),
                        [&](int64_t i) { return queries->get(size_t(query_ids[i].item<int64_t>())).image; },
                        "raw pixels of the queries");
  return exact_retrieval(base, base_labels, model::normalise_rows(q - mean), labels, k);
}

}  // namespace invp::search
