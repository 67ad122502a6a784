// Internal to search/: the pieces of index_dir.cpp that the slice/merge code (index_slices.cpp)
// shares. Not included outside src/invp/search/.
#pragma once
#include <invp/search/index_dir.h>

#include <cstdint>
#include <string>
#include <vector>

namespace invp::search::detail {

constexpr int64_t kBlockRows = 65536;
// gather_rows() reads a block's wanted rows one run at a time below this many, else the block.
constexpr int64_t kSparseRows = 1024;

std::string read_text(const std::string& path);
std::string index_file(int gen);
std::string meta_file(int gen);
std::string lists_file(int gen);   // on-disk inverted lists (FAISS OnDiskInvertedLists)
std::string added_file(int gen);   // a slice added to an on-disk index, searched beside it
FileRecord record_of(const std::string& path);
void copy_atomically(const std::string& from, const std::string& to);
// Removes data files, temporaries and partial outputs that index.json does not name.
void remove_leftovers(const std::string& dir, const IndexInfo& keep);
// Writes index.json (atomically, last) and removes what it no longer names.
void commit(const std::string& dir, IndexInfo& info);
std::vector<int64_t> sample_rows(int64_t n, int64_t m, uint64_t seed);
// Embeddings of the given rows (ascending, each < r.size()) as rows.size()×dim.
torch::Tensor gather_rows(const store::EmbeddingReader& r, const std::vector<int64_t>& rows);
torch::Tensor exact_truth(const store::EmbeddingReader& r, const torch::Tensor& queries, int k);
// Tunes ann's search parameters to opts.target_recall (recall@k against exact search of a
// held-out sample of reader's rows) and records them and the measured figures in info (with
// opts.rerank on, only measures the recipe's setting: finish_tuning() tunes); returns
// the sample, its exact neighbours and k, for further measurements on the same queries.
struct TuningSample {
  torch::Tensor queries, truth;
  int k = 0;
};
TuningSample tune_into(IndexInfo& info, index::AnnIndex& ann, const store::EmbeddingReader& reader,
                       const BuildOptions& opts);
// After the first commit of a tuned index in DIR: when opts.rerank is on, tunes again through
// the directory's own search path (exact re-rank from the vectors file) to the same target,
// records the re-ranked recall, the codes' recall and queries/s at the new setting, and commits
// again; warns when the recall queries get stays below the target.
void finish_tuning(const std::string& dir, IndexInfo& info, const TuningSample& s, const BuildOptions& opts);
// Trains ann (if it needs it) on a sample of train_size rows of reader; PQ on one thread.
void train_ann(index::AnnIndex& ann, const store::EmbeddingReader& reader, const index::Recipe& recipe,
               uint64_t seed);
index::Recipe resolve_recipe(const std::string& spec, int64_t n, int64_t dim, int64_t max_memory,
                             std::string* reason, bool* on_disk = nullptr);

}  // namespace invp::search::detail
