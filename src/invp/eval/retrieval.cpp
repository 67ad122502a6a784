#include <invp/core/error.h>
#include <invp/eval/retrieval.h>

#include <algorithm>

namespace invp::eval {

double precision_at_k(const std::vector<int32_t>& ranked, int32_t query_label, int k) {
  if (k <= 0 || size_t(k) > ranked.size()) throw Error("", "precision@k: k must be in 1..list size");
  if (query_label < 0) return 0;
  int hits = 0;
  for (int r = 0; r < k; ++r) hits += ranked[size_t(r)] == query_label;
  return double(hits) / k;
}

double average_precision_at_k(const std::vector<int32_t>& ranked, int32_t query_label, int k,
                              int64_t relevant_in_collection) {
  if (k <= 0) throw Error("", "AP@k: k must be positive");
  if (query_label < 0 || relevant_in_collection <= 0) return 0;
  const int n = std::min<int>(k, int(ranked.size()));
  double sum = 0;
  int hits = 0;
  for (int r = 0; r < n; ++r) {
    if (ranked[size_t(r)] != query_label) continue;
    ++hits;
    sum += double(hits) / (r + 1);
  }
  return sum / double(std::min<int64_t>(k, relevant_in_collection));
}

void RetrievalMeter::add(const std::vector<int32_t>& ranked, int32_t query_label,
                         int64_t relevant_in_collection) {
  if (query_label < 0 || ranked.empty()) return;
  const int k = std::min<int>(k_, int(ranked.size()));
  p1_ += precision_at_k(ranked, query_label, 1);
  pk_ += precision_at_k(ranked, query_label, k);
  ap_ += average_precision_at_k(ranked, query_label, k, relevant_in_collection);
  ++n_;
}

RetrievalScores RetrievalMeter::result() const {
  RetrievalScores s;
  s.k = k_;
  s.evaluated = n_;
  if (n_ > 0) s.precision_at_1 = p1_ / n_, s.precision_at_k = pk_ / n_, s.map_at_k = ap_ / n_;
  return s;
}

}  // namespace invp::eval
