// Index directories: build one from embeddings.h5, add to it, open it for search.
// Layout (docs/ARCHITECTURE.md, "Files it writes"), self-contained:
//   index.json          the commit record, written last and atomically: format version,
//                       recipe, factory, metric, dim, size, next id, model hash, generation,
//                       every data file with its size and XXH3-128, and what the build
//                       measured (recall@k at the tuned search parameters, queries/s)
//   index-<gen>.faiss   the FAISS index (readable with faiss::read_index)
//   meta-<gen>.h5       ids, paths, labels, categories and the embeddings (embeddings.h5
//                       layout), so `--id` queries and `inspect` need no other file; it is
//                       the one vectors file: read by id in chunks (re-ranking, --id), never
//                       loaded whole
//   lists-<G>.ivfdata   on-disk indexes: the inverted lists (FAISS OnDiskInvertedLists),
//                       memory-mapped read-only at search, found beside index-<gen>.faiss;
//                       written once by a merge (G: its generation), kept by later adds
//   added-<gen>.faiss   on-disk indexes after `index add`: the added vectors as an in-memory
//                       slice of the same trained index, searched beside the mapped lists
//   trained.faiss       IVF indexes built from slices: the empty trained index (for adds)
// Verification: index.json records size and XXH3 of every file, computed when it is written.
// Opening checks sizes, and hashes files up to kHashAtOpenBytes; bigger ones (the .ivfdata,
// a large vectors file) are not re-read on every query: size at open, hash at write time.
//   model.pt/model.json the encoder that made the embeddings (copied at build)
// A build or an add writes a new generation of data files, then index.json; files that
// index.json does not name are leftovers of an interrupted run and are removed by the next
// writer. So a killed build/add leaves the previous index intact.
#pragma once
#include <invp/index/ann_index.h>
#include <invp/search/embedder.h>
#include <invp/search/filter.h>
#include <invp/store/embedding_store.h>

#include <torch/torch.h>

#include <cstdint>
#include <future>
#include <map>
#include <utility>
#include <memory>
#include <string>
#include <vector>

namespace invp::search {

constexpr int kIndexFormatVersion = 1;

struct FileRecord {
  int64_t bytes = 0;
  std::string xxh3;
};

// Files larger than this are checked by size only when an index is opened (see above).
constexpr int64_t kHashAtOpenBytes = int64_t(256) << 20;

struct IndexInfo {
  std::string kind = "index";        // "index", "trained" (index train) or "slice" (build --trained)
  std::string trained_hash;          // XXH3 of the trained index slices/merges came from
  std::string ivfdata;               // on-disk lists file ("" = lists in the .faiss file)
  std::string added;                 // added-<gen>.faiss of an on-disk index ("" = none)
  int rerank = 0;                    // candidates re-ranked exactly from the vectors file (0 = off)
  int64_t tombstones = 0;            // removed vectors the FAISS index still holds (see remove_from_index)
  double rerank_recall = 0;          // recall@k measured with re-ranking at the tuned parameters
  index::Recipe recipe;
  std::string factory;               // resolved factory string
  std::string choice_reason;         // why this recipe (auto) or "given"
  int64_t dim = 0, size = 0, next_id = 0;
  int generation = 0;
  std::string model_hash;            // of the model that made the embeddings
  std::string precision = "fp32";    // the embeddings' (fp32 or bf16, from invp embed)
  std::string features = "head";     // what the embeddings are: the model's output or its backbone's
  bool has_model = false;            // model.pt + model.json copied in
  std::map<std::string, FileRecord> files;  // data files of this generation
  std::map<std::string, double> search_params;
  int tuned_k = 10;
  double target_recall = 0, recall = 0, queries_per_second = 0;
  double build_seconds = 0;
  std::string created, updated, source;
  std::string to_json() const;
  static IndexInfo from_json(const std::string& text, const std::string& file);
};

struct BuildOptions {
  std::string recipe = "auto";       // "auto", a built-in name, or a recipe file
  int64_t max_memory = 0;            // bytes for the index in memory (0 = no limit)
  double target_recall = 0.95;       // recall@k the search parameters are tuned to
  int k = 10;
  int64_t tune_queries = 500;        // held-out sample queried against exact search
  std::string model_pt;              // override; default: the model recorded in the file
  uint64_t seed = 0;
  std::string source_label;          // what index.json records as the source (default: the file)
  bool on_disk = false;              // IVF lists in an .ivfdata (auto sets it when codes don't fit)
  int rerank = 0;                    // re-rank this many candidates exactly (PQ recipes; 0 = off)
  int64_t slice_rows = 1000000;      // on-disk builds: vectors per slice filled in memory
};

struct BuildReport {
  IndexInfo info;
  double seconds = 0;
};
BuildReport build_index(const std::string& embeddings_h5, const std::string& dir,
                        const BuildOptions& opts);
// The same from the parts of one source (`invp embed --shard` files, any order), joined in id
// order first (store::join_parts: mismatched models and overlapping ids are refused).
BuildReport build_index(const std::vector<std::string>& parts, const std::string& dir, const BuildOptions& opts);
// Rows of all the parts, in id order (for index add).
store::Rows read_parts(const std::vector<std::string>& parts);

struct AddReport {
  int64_t added = 0, first_id = 0, size = 0;
  double seconds = 0;
};
// Adds ROWS (embeddings required; their ids are replaced by next_id, next_id+1, ...) made
// with the index's model (model_hash must match). The index is not rebuilt or retrained.
// CATEGORIES, when given, is the new label → name list (the index's own list followed by
// new names, e.g. from apply_label_csv in index_edit.h); anything else is refused.
AddReport add_to_index(const std::string& dir, const store::Rows& rows, const std::string& model_hash,
                       const std::vector<std::string>& categories = {});

// Train once, fill in slices, merge (index_slices.cpp). `train_index` trains an IVF recipe on
// SAMPLE and writes a "trained" directory (index-1.faiss empty, no metadata); expected_n sets
// {nlist} (0: the sample's size). `fill_slice` adds the embeddings (parts of one source) to a
// copy of the trained index: a "slice" directory (queryable, untuned). `merge_slices` checks
// that every slice comes from the same training and model with disjoint ids, then writes one
// index (lists in memory, or in an .ivfdata with on_disk) under DIR as a new generation,
// index.json last, and tunes it on the whole collection.
struct TrainOptions {
  std::string recipe = "ivf-pq";
  int64_t expected_n = 0;
  uint64_t seed = 0;
};
IndexInfo train_index(const std::string& sample_h5, const std::string& dir, const TrainOptions& opts);
IndexInfo fill_slice(const std::string& trained_dir, const std::vector<std::string>& parts,
                     const std::string& dir);
BuildReport merge_slices(const std::vector<std::string>& slice_dirs, const std::string& dir,
                         const BuildOptions& opts);
// An index whose lists do not fit memory, built from one embeddings file in slices of
// opts.slice_rows: train, fill, merge on disk (what build_index does when on_disk is set).
BuildReport build_on_disk(const std::string& embeddings_h5, const std::string& dir, const BuildOptions& opts,
                          const index::Recipe& recipe, const std::string& reason);
// index add on an on-disk index: the new vectors go into added-<gen>.faiss (a slice of the
// kept trained index, rewritten with the previous additions); the .ivfdata is not copied.
void add_on_disk(const std::string& dir, IndexInfo& info, const store::Rows& add);

// Top k of several result lists for the same queries, by similarity (ties: earlier list).
index::KnnResult merge_results(const std::vector<index::KnnResult>& parts, int k);

struct Hit {
  int64_t id = -1;
  float score = 0;       // cosine similarity
  int32_t label = -1;
  std::string category;  // label name when known
  std::string path;
};

class IndexHandle {
 public:
  // Opens DIR, checking index.json, the data files' sizes and hashes, dims and the model.
  // model_override: another model.pt whose hash must equal the index's model hash.
  explicit IndexHandle(const std::string& dir, const std::string& model_override = "",
                       const std::string& device = "cpu");
  ~IndexHandle();
  const IndexInfo& info() const { return info_; }
  const std::string& dir() const { return dir_; }
  // The FAISS index; it loads in the background from the constructor on, and the first
  // call waits for it (and throws its load error, if any).
  index::AnnIndex& ann();
  // The slice added to an on-disk index (loaded with ann()), searched beside it; or nullptr.
  index::AnnIndex* added_slice() { return ann(), added_.get(); }
  // Raw top-k over the whole directory (the base index and, for on-disk indexes, the added
  // slice), re-ranked exactly from the vectors file when info().rerank is set. ALLOWED
  // restricts the hits to those ids (AnnIndex's filtered search; STATS says how it went);
  // removed items (tombstones) are never returned either way.
  index::KnnResult search_ids(const torch::Tensor& queries, int k, const index::IdSet* allowed = nullptr,
                              index::FilterStats* stats = nullptr);
  // The ids F admits, computed from the metadata once per filter text and kept (a few).
  const index::IdSet& allowed(const Filter& f);
  // Search parameters for the whole directory (base index and added slice).
  void set_search_params(const std::map<std::string, double>& params);
  // First and last id held (ids are increasing in meta).
  std::pair<int64_t, int64_t> id_range();
  store::EmbeddingReader& meta() { return *meta_; }
  const std::vector<std::string>& categories() const;
  // The model (loaded on first use, in `precision`: see Embedder); throws invp::Error if the
  // index has none.
  Embedder& embedder(const std::string& precision = "fp32");
  bool has_labels();

  // k best hits per query row (Q×D normalised); `exclude` (one id per query, −1 for none)
  // drops that id from its row (a query that is itself in the index).
  std::vector<std::vector<Hit>> search(const torch::Tensor& queries, int k,
                                       const std::vector<int64_t>& exclude = {},
                                       const index::IdSet* allowed = nullptr, index::FilterStats* stats = nullptr);
  // Row of id in meta (−1 if absent) and the stored embeddings of ids (n×D).
  int64_t row_of(int64_t id);
  torch::Tensor vectors(const std::vector<int64_t>& ids);
  Hit describe(int64_t id, float score);
  // All labels of the collection in meta-row order (loaded once).
  const std::vector<int32_t>& labels();
  const std::vector<int64_t>& ids();
  // Loaded on first use (only path filters need them).
  const std::vector<std::string>& paths();
  // Every id the metadata holds, when the FAISS index also holds removed ones (tombstones);
  // nullptr when it holds nothing else. Built once.
  const index::IdSet* live_ids();

 private:
  std::string dir_, model_override_, device_;
  IndexInfo info_;
  std::future<index::AnnIndex> ann_loading_;
  std::unique_ptr<index::AnnIndex> ann_, added_;
  bool dense_ids_ = false;  // meta's ids are 0..size-1, so row == id
  std::unique_ptr<store::EmbeddingReader> meta_;
  std::unique_ptr<Embedder> embedder_;
  std::vector<int64_t> ids_;
  std::vector<int32_t> labels_;
  std::vector<std::string> paths_;
  bool paths_loaded_ = false;
  bool rows_loaded_ = false;
  std::unique_ptr<index::IdSet> live_;  // every id meta holds, when tombstones must be skipped
  std::vector<std::pair<std::string, index::IdSet>> allowed_;  // by filter text, newest last
  void load_rows();
};

// The index.json of DIR (throws invp::Error naming it when missing or malformed).
IndexInfo read_index_info(const std::string& dir);

}  // namespace invp::search
