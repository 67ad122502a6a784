// Index directories: build one from embeddings.h5, add to it, open it for search.
// Layout (docs/ARCHITECTURE.md, "Files it writes"), self-contained:
//   index.json          the commit record, written last and atomically: format version,
//                       recipe, factory, metric, dim, size, next id, model hash, generation,
//                       every data file with its size and XXH3-128, and what the build
//                       measured (recall@k at the tuned search parameters, queries/s)
//   index-<gen>.faiss   the FAISS index (readable with faiss::read_index)
//   meta-<gen>.h5       ids, paths, labels, categories and the embeddings (embeddings.h5
//                       layout), so `--id` queries and `inspect` need no other file
//   model.pt/model.json the encoder that made the embeddings (copied at build)
// A build or an add writes a new generation of data files, then index.json; files that
// index.json does not name are leftovers of an interrupted run and are removed by the next
// writer. So a killed build/add leaves the previous index intact.
#pragma once
#include <invp/index/ann_index.h>
#include <invp/search/embedder.h>
#include <invp/store/embedding_store.h>

#include <torch/torch.h>

#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace invp::search {

constexpr int kIndexFormatVersion = 1;

struct FileRecord {
  int64_t bytes = 0;
  std::string xxh3;
};

struct IndexInfo {
  index::Recipe recipe;
  std::string factory;               // resolved factory string
  std::string choice_reason;         // why this recipe (auto) or "given"
  int64_t dim = 0, size = 0, next_id = 0;
  int generation = 0;
  std::string model_hash;            // of the model that made the embeddings
  std::string precision = "fp32";    // the embeddings' (fp32 or bf16, from invp embed)
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
AddReport add_to_index(const std::string& dir, const store::Rows& rows, const std::string& model_hash);

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
  store::EmbeddingReader& meta() { return *meta_; }
  const std::vector<std::string>& categories() const;
  // The model (loaded on first use, in `precision`: see Embedder); throws invp::Error if the
  // index has none.
  Embedder& embedder(const std::string& precision = "fp32");
  bool has_labels();

  // k best hits per query row (Q×D normalised); `exclude` (one id per query, −1 for none)
  // drops that id from its row (a query that is itself in the index).
  std::vector<std::vector<Hit>> search(const torch::Tensor& queries, int k,
                                       const std::vector<int64_t>& exclude = {});
  // Row of id in meta (−1 if absent) and the stored embeddings of ids (n×D).
  int64_t row_of(int64_t id);
  torch::Tensor vectors(const std::vector<int64_t>& ids);
  Hit describe(int64_t id, float score);
  // All labels of the collection in meta-row order (loaded once).
  const std::vector<int32_t>& labels();
  const std::vector<int64_t>& ids();

 private:
  std::string dir_, model_override_, device_;
  IndexInfo info_;
  std::future<index::AnnIndex> ann_loading_;
  std::unique_ptr<index::AnnIndex> ann_;
  std::unique_ptr<store::EmbeddingReader> meta_;
  std::unique_ptr<Embedder> embedder_;
  std::vector<int64_t> ids_;
  std::vector<int32_t> labels_;
  bool rows_loaded_ = false;
  void load_rows();
};

// The index.json of DIR (throws invp::Error naming it when missing or malformed).
IndexInfo read_index_info(const std::string& dir);

}  // namespace invp::search
