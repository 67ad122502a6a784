// Internals shared by ann_recipe.cpp, ann_index.cpp and ann_tune.cpp (not a public header:
// other stages include ann_index.h only).
#pragma once
#include <invp/index/ann_index.h>

#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexPreTransform.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <cstdio>
#include <string>

#include <fcntl.h>
#include <unistd.h>

namespace invp::index {
namespace detail {

// Peels the wrappers that forward search parameters (id maps, pre-transforms such as OPQ).
inline const faiss::Index* core_of(const faiss::Index* idx) {
  for (;;) {
    if (auto* m = dynamic_cast<const faiss::IndexIDMap*>(idx)) {
      idx = m->index;
    } else if (auto* p = dynamic_cast<const faiss::IndexPreTransform*>(idx)) {
      idx = p->index;
    } else {
      return idx;
    }
  }
}

// Runs f with stdout pointed at /dev/null: FAISS 1.7.3 prints on stdout when it re-points
// on-disk lists at an index's own directory and when OnDiskInvertedLists grows its file, and
// stdout carries invp's results (--json, JSON lines under --serve). Nothing else writes stdout
// meanwhile (answers wait for the index). Several threads may be inside at once (index
// directories load on background threads, several at a time for `query --index A --index
// B`): the first one in points stdout away and the last one out points it back. Each saving
// and restoring on its own lost stdout for good when two loads interleaved.
struct QuietStdout {
  std::mutex mu;
  int depth = 0, saved = -1;
};
inline QuietStdout& quiet_stdout_state() {
  static QuietStdout s;
  return s;
}
template <class F>
auto with_quiet_stdout(F&& f) -> decltype(f()) {
  QuietStdout& s = quiet_stdout_state();
  {
    std::lock_guard<std::mutex> l(s.mu);
    if (s.depth++ == 0) {
      std::fflush(stdout);
      s.saved = ::dup(1);
      const int null = ::open("/dev/null", O_WRONLY);
      if (s.saved >= 0 && null >= 0) ::dup2(null, 1);
      if (null >= 0) ::close(null);
    }
  }
  struct Restore {
    QuietStdout& s;
    ~Restore() {
      std::lock_guard<std::mutex> l(s.mu);
      if (--s.depth > 0) return;
      std::fflush(stdout);
      if (s.saved >= 0) ::dup2(s.saved, 1), ::close(s.saved);
      s.saved = -1;
    }
  } restore{s};
  return f();
}


// Inverted lists for n vectors: ≈ 4·sqrt(n), at most train_vectors / 39 (FAISS warns below 39
// training points per centroid), at least 1. train_vectors = min(train_size, n), or n if 0.
int64_t ivf_nlist(const Recipe& recipe, int64_t n);

// PQ sub-quantizers for dim: the largest divisor of dim that is ≤ min(64, dim / 4).
// dim/4 gives one code byte per 4 floats (16× smaller than float32) with little enough
// distortion that recall@10 ≥ 0.9 stays reachable by raising nprobe; the cap of 64 bytes
// keeps the per-query lookup tables (m × 256 floats) in L1/L2 and codes compact for very
// wide embeddings. It must divide dim (PQ splits dim into m equal parts) and OPQ{m} rotates
// for exactly that split.
int64_t pq_subquantizers(int64_t dim);

// The factory string with "{nlist}" and "{m}" replaced; any other placeholder is an error.
std::string resolve_factory(const Recipe& recipe, int64_t dim, int64_t n);

// Throws invp::Error unless the resolved factory string is in the subset FAISS handles
// without crashing (see ann_recipe.cpp), with dimensions that fit dim.
void check_factory(const std::string& factory, int64_t dim);

// Throws invp::Error unless t is a 2-D float32 contiguous CPU tensor with `dim` columns
// (dim < 0: any).
void check_matrix(const at::Tensor& t, int64_t dim, const char* what);

std::string human_bytes(int64_t bytes);

}  // namespace detail

// What an AnnIndex holds (ann_index.cpp; filtered search and removal in ann_filter.cpp).
struct AnnIndex::Impl {
  std::unique_ptr<faiss::Index> index;
  std::string factory;
  int64_t train_size = 0;
  faiss::IndexIVF* ivf = nullptr;    // the tunable core, if IVF
  faiss::IndexHNSW* hnsw = nullptr;  // the tunable core, if HNSW

  void find_core() {
    auto* core = const_cast<faiss::Index*>(detail::core_of(index.get()));
    ivf = dynamic_cast<faiss::IndexIVF*>(core);
    hnsw = dynamic_cast<faiss::IndexHNSW*>(core);
  }
  bool l2() const { return index->metric_type == faiss::METRIC_L2; }
};

}  // namespace invp::index
