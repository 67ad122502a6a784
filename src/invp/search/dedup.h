// Near-duplicates in an index directory (`invp dedup`): every pair of items whose cosine
// similarity is at least a threshold, grouped into connected components.
// Candidates come from the index's own search, one batch of stored rows at a time, never from
// an N×N matrix: range search where the index has it (Flat, IVF, also on-disk lists and
// their added slice), otherwise top-k with a score cut whose k doubles for the rows whose
// k-th hit is still above it (HNSW). Every candidate pair is then re-scored exactly from
// the stored vectors (the meta file, read by id), so the threshold is a true cosine
// similarity whatever the recipe's metric or code, and a pair is kept iff that exact cosine
// is ≥ the threshold. What an approximate index never proposes is missed (IVF at nprobe
// below nlist, HNSW), never invented.
#pragma once
#include <invp/search/index_dir.h>

#include <cstdint>
#include <string>
#include <vector>

namespace invp::search {

struct DedupOptions {
  double threshold = 0.95;   // cosine similarity; pairs at or above it are duplicates
  int k = 16;                // first hits per item on the top-k path (doubled while needed)
  int64_t batch_rows = 4096; // stored rows queried per search call
};

// Within one index a < b; across two, a is in the first index and b in the second.
// score: the exact cosine of the stored vectors.
struct DuplicatePair {
  int64_t a = -1, b = -1;
  double score = 0;
};

// How a scan went: "range search" or "top-k", rows queried, candidate pairs the index
// proposed (before exact re-scoring) and pairs kept.
struct DedupStats {
  std::string method;
  int64_t queried = 0, candidates = 0, pairs = 0;
  double seconds = 0;
};

// Pairs of duplicates within INDEX, sorted by (a, b), each once.
std::vector<DuplicatePair> duplicate_pairs(IndexHandle& index, const DedupOptions& opts,
                                           DedupStats* stats = nullptr);
// Pairs (a in INDEX, b in OTHER) with exact cosine ≥ threshold, sorted by (a, b). Both
// directories must hold embeddings of the same model: a different model hash (or dim) is
// refused with an invp::Error naming OTHER.
std::vector<DuplicatePair> cross_pairs(IndexHandle& index, IndexHandle& other, const DedupOptions& opts,
                                       DedupStats* stats = nullptr);

// A connected component of the "above threshold" graph. items[0] is the representative (the
// member with the highest mean cosine to the rest of the group; ties: smallest id), the rest
// by decreasing score, then id; every Hit's score is its cosine to the representative
// (1 for the representative itself), with path, label and category from the index.
struct DedupGroup {
  int64_t representative = -1;
  std::vector<Hit> items;
};
// Groups of PAIRS (from duplicate_pairs), biggest first, ties by smallest representative id.
std::vector<DedupGroup> group_duplicates(IndexHandle& index, const std::vector<DuplicatePair>& pairs);

// The items of INDEX that exist in OTHER: per item (by id), its matches in OTHER by
// decreasing score (ties: id).
struct CrossMatch {
  Hit item;                  // score 1
  std::vector<Hit> matches;  // described from OTHER, score = exact cosine to item
};
std::vector<CrossMatch> cross_matches(IndexHandle& index, IndexHandle& other,
                                      const std::vector<DuplicatePair>& pairs);

// For --threshold auto: each item's similarity to its nearest other item (exact cosine of the
// stored vectors; the neighbour is the index's best hit), in meta row order. Items alone in
// the index are left out.
std::vector<float> nearest_neighbour_similarities(IndexHandle& index, const DedupOptions& opts);

// A threshold read off the distribution of nearest-neighbour similarities (dedup_threshold.cpp
// says how). counts: the histogram it used, equal bins over [lo, 1]; from_valley false when
// the distribution shows no separate near-duplicate mode and `fallback` was returned.
struct ThresholdProposal {
  double threshold = 0;
  bool from_valley = false;
  std::string reason;  // one line for the user
  double lo = 0, hi = 1;
  std::vector<int64_t> counts;
};
ThresholdProposal propose_threshold(const std::vector<float>& nn_similarities, double fallback);

}  // namespace invp::search
