// Shared presentation and scoring of search results: the montage of queries and their hits
// (query --montage, inspect, demo) and retrieval precision/mAP by label (eval retrieval, demo).
#pragma once
#include <invp/data/dataset.h>
#include <invp/eval/retrieval.h>
#include <invp/search/index_dir.h>

#include <torch/torch.h>

#include <string>
#include <vector>

namespace invp::search {

// Caption of a hit under its tile: "0.973 Sneaker" (label number, or "-", when unnamed).
std::string hit_caption(const Hit& hit);

// One group of rows per entry of `rows`: first_tiles[r] (when given; captioned
// first_captions[r] or "query"), then its hits loaded back from their paths, padded to
// whole rows of `cols` tiles. A hit whose image cannot be loaded is a blank tile + warning.
void write_hits_montage(const std::vector<data::Image>& first_tiles,
                        const std::vector<std::string>& first_captions,
                        const std::vector<std::vector<Hit>>& rows, int cols, int tile_px,
                        const std::string& out_png);

// Precision@1, precision@k and mAP@k of queries (Q×D) with labels (Q int64) against the
// index's labels. exclude: one id per query to leave out (queries that are index items),
// or empty; relevant counts then omit the query itself.
eval::RetrievalScores evaluate_retrieval(IndexHandle& index, const torch::Tensor& queries,
                                         const torch::Tensor& labels,
                                         const std::vector<int64_t>& exclude, int k);

// The same scores by exact cosine search of queries (Q×D, unit rows) against `base` (N×D,
// unit rows, labels N int64): the yardstick for features no index holds, e.g. raw pixels.
// leave_one_out: the queries are base rows 0..Q-1, each left out of its own list and count.
eval::RetrievalScores exact_retrieval(const torch::Tensor& base, const torch::Tensor& base_labels,
                                      const torch::Tensor& queries, const torch::Tensor& labels, int k,
                                      bool leave_one_out = false);

// `eval retrieval --baseline raw-pixels`: the scores above for raw pixels (copy_check.h's
// raw_input_features, centred on the index items' mean), the index items read back from their
// recorded paths. Without `queries`, the items' first labels.size(0) rows query the others
// (each left out); with it, its items query_ids (labels, in the same order) query them.
eval::RetrievalScores raw_pixel_retrieval(IndexHandle& index, const torch::Tensor& labels, int k,
                                          const data::Dataset* queries = nullptr,
                                          const torch::Tensor& query_ids = {});

}  // namespace invp::search
