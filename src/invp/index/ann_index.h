// Approximate (and exact) nearest-neighbour indexes over embeddings through FAISS: recipes,
// the automatic recipe choice, build / add / search / tune, file I/O with validation, and
// k-means. FAISS types stay inside this stage; callers see tensors and std types.
// Conventions: vectors are float32 n×D CPU contiguous, rows L2-normalised, so inner product
// = cosine similarity; ids are int64 and stable (every index is id-mapped); search results
// are Q×k, best first, with id −1 and similarity −inf where fewer than k were found.
#pragma once
#include <invp/index/exact_knn.h>
#include <invp/index/id_set.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace invp::index {

// An index recipe: what indexes/*.toml hold (keys under [index]):
//   name = "hnsw"                 # short name shown in index.json
//   factory = "HNSW32,Flat"       # FAISS index_factory string, without the IDMap prefix
//   metric = "ip"                 # "ip" (cosine on normalised rows) or "l2"
//   train_size = 100000           # vectors sampled to train (0 = all; ignored if untrained)
//   search.efSearch = 64          # default search parameters (FAISS ParameterSpace names)
// Placeholders in the factory string are resolved at build time:
//   "{nlist}" ≈ 4·sqrt(N), clamped to [1, min(train_size, N) / 39] so that every list gets
//             ≥ 39 training vectors;
//   "{m}"     PQ/OPQ sub-quantizers: the largest divisor of dim ≤ min(64, dim/4), i.e. about
//             one code byte per 4 dimensions (see ann_detail.h for why).
// Search parameters: "nprobe" (IVF) and "efSearch" (HNSW), whole numbers in [1, 2^20].
// For metric "l2" the similarities returned by search are −(squared L2 distance).
struct Recipe {
  std::string name;
  std::string factory;
  std::string metric = "ip";
  int64_t train_size = 0;
  std::map<std::string, double> search;  // e.g. {"nprobe", 16} or {"efSearch", 64}
};

// Parses a recipe file: one [index] section, `key = number` / `key = "string"` lines
// (escapes \" and \\ only), # comments. Throws invp::Error naming "file:line" and the key
// for anything wrong (unknown key or section, duplicate key, bad number or metric, search
// parameter the factory lacks) and the file for a missing factory or one FAISS rejects for
// dim 8 and for every common embedding width (64 … 1024). name defaults to the file stem.
Recipe load_recipe(const std::string& path);
// The built-in recipes by name: "flat", "hnsw", "ivf-flat", "ivf-pq" (OPQ + IVF + PQ..np),
// identical to indexes/<name>.toml. Placeholders stay unresolved (the files cannot know
// dim); dim is only checked (≥ 1).
Recipe builtin_recipe(const std::string& name, int64_t dim);
std::vector<std::string> builtin_recipe_names();

// Bytes an index of `recipe` over n vectors of dim d will take in memory (estimate: codes,
// ids, links, centroids and id-map entries; not allocator slack or training buffers).
int64_t estimate_memory(const Recipe& recipe, int64_t n, int64_t dim);

// The automatic choice (autofaiss-style), first rule that fits max_memory_bytes (0 = no
// limit): Flat for n < 50 000; HNSW32 for n ≤ 1M; IVF-Flat; OPQ/IVF-PQ. Throws invp::Error
// when not even IVF-PQ fits. `reason` is one human-readable line saying why.
// When not even the IVF-PQ codes fit but its fixed part (quantizer, OPQ, PQ centroids) does,
// the choice is IVF-PQ with on_disk set: the inverted lists go to an .ivfdata file that
// search memory-maps (the page cache holds what is hot; anonymous memory stays bounded).
struct AutoChoice {
  Recipe recipe;
  std::string reason;
  int64_t estimated_bytes = 0;
  bool on_disk = false;
};
AutoChoice choose_recipe(int64_t n, int64_t dim, int64_t max_memory_bytes);

class AnnIndex {
 public:
  // An empty, untrained index for vectors of `dim` ({nlist} resolved from expected_n).
  AnnIndex(const Recipe& recipe, int64_t dim, int64_t expected_n);
  AnnIndex(AnnIndex&&) noexcept;
  AnnIndex& operator=(AnnIndex&&) noexcept;
  ~AnnIndex();

  bool is_trained() const;
  void train(const at::Tensor& sample);  // no-op for indexes that need no training
  void add(const at::Tensor& vectors, const at::Tensor& ids);  // ids: n int64
  // Q×k results; k ≤ 0 is an error; k > size() pads with −1 / −inf. Ids must be ≥ 0;
  // duplicates are the caller's to refuse.
  KnnResult search(const at::Tensor& queries, int k) const;
  // The same among the ids in ALLOWED only (ann_filter.cpp), in one of three ways (STATS
  // says which): a set that admits few items (IVF 10 %, HNSW 25 %, Flat 50 %) is
  // scored exactly, its vectors read back from the index; IVF applies a larger set inside
  // FAISS's search (an IDSelector) with nprobe raised as the set gets more selective, and
  // probes every list for queries still short of k; HNSW (FAISS 1.7.3 takes no search
  // parameters there) and Flat over-fetch: k / selectivity candidates (HNSW: efSearch raised
  // to match), four times more for queries still short of k, until the whole index has been
  // searched. Not safe beside another search of the same HNSW index (efSearch is changed).
  KnnResult search(const at::Tensor& queries, int k, const IdSet& allowed, FilterStats* stats = nullptr) const;
  // Removal in place (Flat, IVF with lists in memory): ids absent from the index are
  // ignored; returns how many were removed. Where can_remove() is false (HNSW, lists mapped
  // from disk) it throws, and callers keep a tombstone set instead.
  bool can_remove() const;
  int64_t remove(const std::vector<int64_t>& ids);
  // Everything within a cosine similarity of each query: for query i, entries
  // [lims[i], lims[i+1]) of ids / similarities (unsorted), every indexed vector FAISS scores
  // strictly above min_similarity. Works in cosine whatever the metric: for "l2" recipes the
  // threshold becomes the squared-L2 radius 2 − 2·min_similarity and distances come back as
  // 1 − d/2, both exact for unit rows. As approximate as search() (IVF probes nprobe lists;
  // PQ scores are estimates). lims: Q+1 int64; ids int64; similarities float32.
  // Flat and IVF cores have it (also under IDMap2 or a pre-transform); HNSW does not in
  // FAISS 1.7.3: range_search throws invp::Error unless supports_range_search().
  struct RangeResult {
    at::Tensor lims, ids, similarities;
  };
  RangeResult range_search(const at::Tensor& queries, float min_similarity) const;
  bool supports_range_search() const;
  int64_t size() const;
  int64_t dim() const;
  // The resolved factory string as given to FAISS, with the "IDMap2," prefix where one was
  // added; after read(), rebuilt from the index's structure (same string for built-ins).
  std::string factory() const;

  // Search-time parameters by FAISS ParameterSpace name ("nprobe", "efSearch"); a name the
  // index does not have throws invp::Error. tunable_parameters() lists the ones it has.
  void set_search_params(const std::map<std::string, double>& params);
  std::map<std::string, double> search_params() const;
  std::vector<std::string> tunable_parameters() const;
  // The values tune() tries for that parameter, cheapest first: nprobe 1, 2, 4, …, nlist;
  // efSearch 16, 32, …, 1024. Empty for Flat.
  std::vector<double> tuning_sweep() const;

  // write: FAISS write_index to `path` atomically. read: checks the file's size and
  // XXH3-128 hash against the expected values (from index.json; both required) before FAISS
  // sees a byte; every failure, FAISS's included, is an invp::Error naming the file.
  // Search parameters are kept in the file.
  void write(const std::string& path) const;
  // An index whose inverted lists live in an .ivfdata file (merge_ivf_slices with an ivfdata
  // path) is read with them memory-mapped read-only, the .ivfdata looked up in the same
  // directory as `path` (so the directory can move); its size is checked against the lists'
  // extent before FAISS maps it. add() on such an index throws (add a slice instead).
  static AnnIndex read(const std::string& path, int64_t expected_bytes,
                       const std::string& expected_hash);

  bool is_ivf() const;
  bool on_disk() const;  // inverted lists memory-mapped from an .ivfdata file

 private:
  AnnIndex() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A file with the size and XXH3-128 recorded for it (index.json), checked before FAISS reads it.
struct CheckedFile {
  std::string path;
  int64_t bytes = -1;
  std::string xxh3;
};

// Merges IVF slices (files written by AnnIndex::write, each the same trained index with
// different vectors added; ids must not overlap, which the caller checks) into one index at
// out_path, written atomically. `trained` is the empty trained index they were filled from:
// every slice must have its quantizer and codebooks (FAISS's merge check, byte-compared),
// else invp::Error naming the slice. ivfdata empty: the lists are merged in memory, one slice
// read at a time. ivfdata given: the slices are memory-mapped (FAISS IO_FLAG_MMAP) and their
// lists copied into a FAISS OnDiskInvertedLists file at that path (same directory as
// out_path), which out_path then refers to; anonymous memory stays at the trained index plus
// list bookkeeping. Returns the number of vectors merged.
int64_t merge_ivf_slices(const CheckedFile& trained, const std::vector<CheckedFile>& slices,
                         const std::string& out_path, const std::string& ivfdata);

// Throws invp::Error naming the file unless it exists with the expected size and hash.
void check_file(const CheckedFile& f, const std::string& fix);

// Mean over queries of |found_i ∩ truth_i| / k (both Q×k int64; −1 entries never match;
// a truth row with fewer than k valid ids divides by its count of valid ids instead).
double recall_at_k(const at::Tensor& found, const at::Tensor& truth);

// Raises the index's speed/accuracy knob through tuning_sweep() until recall@k of `queries`
// against `truth` (exact ids, Q×k) reaches target_recall. If it never does, it stops where
// recall stops improving (< 0.002 over two steps) or at the sweep's end, and keeps the
// cheapest value within 0.001 of the best recall seen. Leaves the chosen parameters set on
// the index. Flat indexes return recall 1. SEARCH, when given, is how a query is answered at the
// setting tune() has just put on the index (e.g. with an exact re-rank of more candidates):
// it returns Q×k ids, and recall and queries/s are measured through it.
using SearchIds = std::function<at::Tensor(const at::Tensor& queries, int k)>;
struct TuneResult {
  std::map<std::string, double> params;
  double recall = 0;
  double queries_per_second = 0;  // at the chosen setting: the query batch repeated ≥ 50 ms
};
TuneResult tune(AnnIndex& index, const at::Tensor& queries, const at::Tensor& truth, int k,
                double target_recall, const SearchIds& search = nullptr);

// Spherical k-means (FAISS Clustering, inner product): centroids k×D (normalised) and the
// assignment of each row (n int64) to its most similar centroid. Needs 1 ≤ k ≤ n; training
// uses at most 256·k rows (FAISS samples them with `seed`).
struct KMeansResult {
  at::Tensor centroids;
  at::Tensor assignments;
};
KMeansResult kmeans(const at::Tensor& x, int k, int iterations = 20, uint64_t seed = 1234);

}  // namespace invp::index
