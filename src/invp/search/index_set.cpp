#include <invp/core/error.h>
#include <invp/search/index_set.h>

#include <algorithm>
#include <numeric>

namespace invp::search {

IndexSet::IndexSet(const std::vector<std::string>& dirs, const std::string& model_override, const std::string& device) {
  if (dirs.empty()) throw Error("", "no index directory given", "pass --index DIR");
  for (const auto& d : dirs) {
    handles_.push_back(std::make_unique<IndexHandle>(d, model_override, device));
    auto [first, last] = handles_.back()->id_range();
    ranges_.push_back({first, last});
    const auto &i = handles_.back()->info(), &i0 = handles_[0]->info();
    if (i.model_hash != i0.model_hash || i.dim != i0.dim)
      throw Error(d, "holds embeddings of another model than " + dirs[0], "search directories built with one model");
  }
  // Ids are increasing within a directory, so disjoint ranges mean disjoint ids.
  std::vector<size_t> order(dirs.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges_[a].first < ranges_[b].first; });
  for (size_t j = 1; j < order.size(); ++j) {
    const Range &a = ranges_[order[j - 1]], &b = ranges_[order[j]];
    if (a.last >= a.first && b.last >= b.first && b.first <= a.last)
      throw Error(dirs[order[j]], "ids " + std::to_string(b.first) + ".." + std::to_string(b.last) + " overlap " +
                                      dirs[order[j - 1]] + "'s (" + std::to_string(a.first) + ".." +
                                      std::to_string(a.last) + ")",
                  "give each directory once; parts of one source keep their source positions as ids");
  }
}

int64_t IndexSet::size() const {
  int64_t n = 0;
  for (const auto& h : handles_) n += h->info().size;
  return n;
}

IndexHandle& IndexSet::owner(int64_t id) {
  for (size_t i = 0; i < handles_.size(); ++i)
    if (id >= ranges_[i].first && id <= ranges_[i].last) return *handles_[i];
  throw Error(handles_[0]->dir(), "no item with id " + std::to_string(id));
}

torch::Tensor IndexSet::vectors(const std::vector<int64_t>& ids) {
  if (handles_.size() == 1) return handles_[0]->vectors(ids);
  auto out = torch::empty({int64_t(ids.size()), handles_[0]->info().dim}, torch::kFloat32);
  for (size_t i = 0; i < ids.size(); ++i) out[int64_t(i)].copy_(owner(ids[i]).vectors({ids[i]})[0]);
  return out;
}

Hit IndexSet::describe(int64_t id, float score) {
  for (size_t i = 0; i < handles_.size(); ++i)
    if (id >= ranges_[i].first && id <= ranges_[i].last) return handles_[i]->describe(id, score);
  Hit h;
  h.id = id, h.score = score;
  return h;
}

std::vector<std::vector<Hit>> IndexSet::search(const torch::Tensor& queries, int k, const std::vector<int64_t>& exclude,
                                               const Filter* filter) {
  auto allowed = [&](IndexHandle& h) { return filter && !filter->empty() ? &h.allowed(*filter) : nullptr; };
  if (handles_.size() == 1) return handles_[0]->search(queries, k, exclude, allowed(*handles_[0]));
  if (k < 1) throw Error("", "-k must be at least 1");
  const bool ex = !exclude.empty();
  const int kk = k + (ex ? 1 : 0);
  std::vector<index::KnnResult> parts;
  for (auto& h : handles_) parts.push_back(h->search_ids(queries.contiguous(), kk, allowed(*h)));
  auto res = merge_results(parts, kk);
  std::vector<std::vector<Hit>> out(size_t(queries.size(0)));
  auto ids = res.indices.accessor<int64_t, 2>();
  auto sims = res.similarities.accessor<float, 2>();
  for (int64_t q = 0; q < queries.size(0); ++q)
    for (int64_t j = 0; j < kk && int(out[size_t(q)].size()) < k; ++j) {
      if (ids[q][j] < 0 || (ex && ids[q][j] == exclude[size_t(q)])) continue;
      out[size_t(q)].push_back(describe(ids[q][j], sims[q][j]));
    }
  return out;
}

}  // namespace invp::search
