// What `invp inspect` reports about an index: the nearest categories of an image, how well
// categories separate in the embedding (neighbour purity, most-confused pairs), k-means
// pseudo-categories for unlabelled collections, and the hop-by-hop propagated set of an
// image (what training would treat as "the same thing").
#pragma once
#include <invp/search/index_dir.h>

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace invp::search {

struct CategoryScore {
  int32_t label = -1;
  std::string name;
  double vote = 0;      // share of the exp(sim/σ)-weighted vote of the top-K neighbours
  double centroid = 0;  // cosine to the category's normalised mean embedding
};
// Categories ordered by vote (then centroid cosine); needs a labelled index.
std::vector<CategoryScore> nearest_categories(IndexHandle& index, const torch::Tensor& query, int k = 50,
                                              double sigma = 0.07, int64_t exclude_id = -1);

// Normalised mean embedding per label (C×D, zero rows for absent labels), streamed.
torch::Tensor category_centroids(IndexHandle& index, int64_t num_classes);

struct CategoryPurity {
  int32_t label = -1;
  std::string name;
  int64_t items = 0;    // items of the category that were queried
  double purity = 0;    // mean share of their k neighbours with the same label
};
struct ConfusedPair {
  int32_t a = -1, b = -1;
  std::string name_a, name_b;
  double share = 0;     // neighbour slots of a's and b's items taken by the other category
};
struct CategoryReport {
  int k = 0;
  int64_t queried = 0;
  double purity = 0;    // over all queried items
  std::vector<CategoryPurity> categories;  // by label
  std::vector<ConfusedPair> confused;      // most confused first
};
CategoryReport category_report(IndexHandle& index, int k = 10, int64_t max_queries = 20000,
                               uint64_t seed = 0, int top_pairs = 10);

struct Cluster {
  int64_t size = 0;                  // items assigned (over the clustered sample)
  std::vector<Hit> closest;          // the items nearest the centroid
};
std::vector<Cluster> cluster_collection(IndexHandle& index, int clusters, int per_cluster = 8,
                                        int64_t max_points = 100000, uint64_t seed = 0);

struct PropagationView {
  Hit anchor;                        // id −1 when the image is not in the index
  std::vector<std::vector<Hit>> hops;
};
// BFS over the index's kNN graph (k neighbours per node, looked up lazily in the index):
// the anchor is the image's own item when it is in the index (cosine ≥ 0.9999), else a
// virtual node whose first hop is the image's k nearest items.
PropagationView propagation(IndexHandle& index, const torch::Tensor& query, int k = 4, int depth = 3);

}  // namespace invp::search
