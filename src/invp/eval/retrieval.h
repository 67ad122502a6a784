// Retrieval metrics by label (`invp eval retrieval`). A query's ranked list is the labels of
// its hits, best first; an item is relevant when its label equals the query's (labels < 0
// are never relevant, and queries with label < 0 are not evaluated).
#pragma once
#include <cstdint>
#include <vector>

namespace invp::eval {

// Share of the first k entries (k ≤ list size) that are relevant.
double precision_at_k(const std::vector<int32_t>& ranked, int32_t query_label, int k);

// Average precision over the first k entries: Σ_{r ≤ k, rel(r)} precision@r / min(k, R),
// R = the number of relevant items in the whole collection (0 when R = 0).
double average_precision_at_k(const std::vector<int32_t>& ranked, int32_t query_label, int k,
                              int64_t relevant_in_collection);

struct RetrievalScores {
  double precision_at_1 = 0, precision_at_k = 0, map_at_k = 0;
  int k = 0;
  int64_t evaluated = 0;
};

// Accumulates per-query figures and reports the means.
class RetrievalMeter {
 public:
  explicit RetrievalMeter(int k) : k_(k) {}
  void add(const std::vector<int32_t>& ranked, int32_t query_label, int64_t relevant_in_collection);
  RetrievalScores result() const;

 private:
  int k_;
  double p1_ = 0, pk_ = 0, ap_ = 0;
  int64_t n_ = 0;
};

}  // namespace invp::eval
