// Several index directories searched as one collection (`invp query --index A --index B`):
// each directory answers its own top k and the lists are merged by score, as FAISS
// IndexShards does (merged here: 1.7.3's IndexShards throws on per-query parameters, and
// each directory keeps its own tuned ones). The directories must hold embeddings of one
// model and disjoint ids (parts of one source keep their source positions). The check is by
// id range (first and last id of each directory, two reads), so directories whose ranges
// interleave are refused even when their ids happen to be disjoint: checking every id would
// read all of them at every start.
#pragma once
#include <invp/search/index_dir.h>

#include <memory>
#include <string>
#include <vector>

namespace invp::search {

class IndexSet {
 public:
  IndexSet(const std::vector<std::string>& dirs, const std::string& model_override = "",
           const std::string& device = "cpu");
  size_t count() const { return handles_.size(); }
  IndexHandle& at(size_t i) { return *handles_[i]; }
  IndexHandle& first() { return *handles_[0]; }
  int64_t size() const;
  // k best hits per query over all directories; `exclude` as IndexHandle::search; FILTER
  // restricts each directory's hits to the items it admits there.
  std::vector<std::vector<Hit>> search(const torch::Tensor& queries, int k, const std::vector<int64_t>& exclude = {},
                                       const Filter* filter = nullptr);
  // Stored vectors of ids, from whichever directory holds each.
  torch::Tensor vectors(const std::vector<int64_t>& ids);
  Hit describe(int64_t id, float score);
  // The model (all directories share it).
  Embedder& embedder(const std::string& precision = "fp32") { return first().embedder(precision); }

 private:
  struct Range {
    int64_t first, last;
  };
  std::vector<std::unique_ptr<IndexHandle>> handles_;
  std::vector<Range> ranges_;
  IndexHandle& owner(int64_t id);
};

}  // namespace invp::search
