// IndexHandle: an index directory opened for search (index_dir.h).
#include <invp/core/error.h>
#include <invp/core/hash.h>
#include <invp/core/log.h>
#include <invp/search/index_dir.h>
#include <invp/search/index_dir_detail.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <limits>

namespace invp::search {
namespace fs = std::filesystem;
using detail::index_file;
using detail::meta_file;

IndexHandle::IndexHandle(const std::string& dir, const std::string& model_override, const std::string& device)
    : dir_(dir), model_override_(model_override), device_(device) {
  info_ = read_index_info(dir);
  auto check = [&](const std::string& name) {
    auto p = (fs::path(dir) / name).string();
    if (!fs::exists(p)) throw Error(p, "missing (named in index.json)", "rebuild the index");
    auto& rec = info_.files.at(name);
    if (int64_t(fs::file_size(p)) != rec.bytes)
      throw Error(p, "size differs from index.json (truncated or replaced)", "rebuild the index");
    return p;
  };
  if (info_.kind == "trained")
    throw Error(dir, "is a trained index without vectors", "fill it with invp index build --trained, then merge");
  auto ipath = check(index_file(info_.generation));
  auto mpath = check(meta_file(info_.generation));
  if (!info_.ivfdata.empty()) check(info_.ivfdata);  // sizes only: hashed when merged
  if (!info_.added.empty()) check(info_.added);
  // The FAISS file (most of the opening time: hashing + read_index) loads on a background
  // thread while the caller goes on, typically loading the model and embedding its queries;
  // ann() waits for it. A query's time after start-up is then max(load, embed) + search.
  const FileRecord rec = info_.files.at(index_file(info_.generation));
  ann_loading_ = std::async(std::launch::async, [ipath, rec] {
    return index::AnnIndex::read(ipath, rec.bytes, rec.xxh3);
  });
  const FileRecord& mrec = info_.files.at(meta_file(info_.generation));
  if (mrec.bytes <= kHashAtOpenBytes && hash_file(mpath) != mrec.xxh3)
    throw Error(mpath, "contents differ from index.json (corrupt or replaced)", "rebuild the index");
  meta_ = std::make_unique<store::EmbeddingReader>(mpath);
  if (meta_->dim() != info_.dim)
    throw Error(dir, "dimension of the index files differs from index.json", "rebuild the index");
  if (meta_->size() != info_.size)
    throw Error(dir, "index and metadata hold different numbers of items", "rebuild the index");
  auto [first, last] = id_range();
  dense_ids_ = info_.size > 0 && first == 0 && last == info_.size - 1;  // increasing + unique ⇒ row == id
}

void IndexHandle::set_search_params(const std::map<std::string, double>& params) {
  ann().set_search_params(params);
  if (added_) added_->set_search_params(params);
}

std::pair<int64_t, int64_t> IndexHandle::id_range() {
  if (meta_->size() == 0) return {0, -1};
  return {meta_->read(0, 1, false).ids[0], meta_->read(meta_->size() - 1, 1, false).ids[0]};
}

IndexHandle::~IndexHandle() = default;  // a pending load is waited for (std::async's future)

index::AnnIndex& IndexHandle::ann() {
  if (!ann_) {
    ann_ = std::make_unique<index::AnnIndex>(ann_loading_.get());  // rethrows a load error
    if (ann_->dim() != info_.dim)
      throw Error(dir_, "dimension of the index files differs from index.json", "rebuild the index");
    if (!info_.search_params.empty()) ann_->set_search_params(info_.search_params);
    if (!info_.added.empty()) {
      const auto p = (fs::path(dir_) / info_.added).string();
      added_ = std::make_unique<index::AnnIndex>(index::AnnIndex::read(p, info_.files.at(info_.added).bytes,
                                                                       info_.files.at(info_.added).xxh3));
      if (!info_.search_params.empty()) added_->set_search_params(info_.search_params);
    }
    if (ann_->size() + (added_ ? added_->size() : 0) != info_.size + info_.tombstones)
      throw Error(dir_, "index and metadata hold different numbers of items", "rebuild the index");
  }
  return *ann_;
}

const std::vector<std::string>& IndexHandle::categories() const { return meta_->meta().categories; }

Embedder& IndexHandle::embedder(const std::string& precision) {
  if (!embedder_) {
    std::string model = model_override_;
    if (model.empty()) {
      if (!info_.has_model)
        throw Error(dir_, "this index has no model, so it cannot embed images",
                    "pass --model (the one that made its embeddings), or query with --id");
      model = (fs::path(dir_) / "model.pt").string();
    }
    // Image queries are embedded as the collection was: the head's output or the backbone's.
    embedder_ = std::make_unique<Embedder>(model, device_, Embedder::output_of(info_.features), precision);
    if (!info_.model_hash.empty() && embedder_->model_hash() != info_.model_hash)
      throw Error(model, "is not the model of index " + dir_ + " (hash differs)",
                  "use the index's own model, or rebuild the index with this one");
    if (embedder_->dim() != info_.dim)
      throw Error(model, "embeds to " + std::to_string(embedder_->dim()) + " dims, the index holds " +
                             std::to_string(info_.dim));
  }
  return *embedder_;
}

void IndexHandle::load_rows() {
  if (rows_loaded_) return;
  auto r = meta_->read_all(false);
  ids_ = std::move(r.ids);
  labels_ = std::move(r.labels);
  rows_loaded_ = true;
}

const std::vector<int32_t>& IndexHandle::labels() {
  load_rows();
  return labels_;
}
const std::vector<int64_t>& IndexHandle::ids() {
  load_rows();
  return ids_;
}

const std::vector<std::string>& IndexHandle::paths() {
  if (!paths_loaded_) paths_ = meta_->read_all(false).paths, paths_loaded_ = true;
  return paths_;
}

const index::IdSet* IndexHandle::live_ids() {
  if (info_.tombstones == 0) return nullptr;
  if (!live_) {
    live_ = std::make_unique<index::IdSet>(info_.next_id);
    for (int64_t id : ids()) live_->insert(id);
  }
  return live_.get();
}

const index::IdSet& IndexHandle::allowed(const Filter& f) {
  for (auto it = allowed_.begin(); it != allowed_.end(); ++it)
    if (it->first == f.text()) {
      std::rotate(it, it + 1, allowed_.end());  // newest last
      return allowed_.back().second;
    }
  constexpr size_t kKeptFilters = 8;
  if (allowed_.size() == kKeptFilters) allowed_.erase(allowed_.begin());
  allowed_.emplace_back(f.text(), select_ids(*this, f));
  return allowed_.back().second;
}

bool IndexHandle::has_labels() {
  const auto& l = labels();
  return std::any_of(l.begin(), l.end(), [](int32_t x) { return x >= 0; });
}

int64_t IndexHandle::row_of(int64_t id) {
  if (dense_ids_) return id >= 0 && id < info_.size ? id : -1;
  if (rows_loaded_) {
    auto it = std::lower_bound(ids_.begin(), ids_.end(), id);
    return it != ids_.end() && *it == id ? int64_t(it - ids_.begin()) : -1;
  }
  // Without loading every id (a query needs a handful): ids are increasing and unique, so
  // row ≤ id; embed gives row == id unless bad items were skipped. Binary search over
  // single-row reads, starting at the guess.
  auto id_at = [&](int64_t r) { return meta_->read(r, 1, false).ids[0]; };
  const int64_t n = meta_->size();
  if (id < 0 || n == 0) return -1;
  int64_t hi = std::min(id, n - 1);
  int64_t v = id_at(hi);
  if (v == id) return hi;
  if (v < id) return -1;
  int64_t lo = 0;  // invariant: id_at(lo) <= id < id_at(hi) once checked
  if (id_at(0) > id) return -1;
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2;
    (id_at(mid) <= id ? lo : hi) = mid;
  }
  return id_at(lo) == id ? lo : -1;
}

torch::Tensor IndexHandle::vectors(const std::vector<int64_t>& ids) {
  // Rows read from the vectors file in ascending order, runs of neighbours in one read.
  std::vector<std::pair<int64_t, size_t>> order;
  for (size_t i = 0; i < ids.size(); ++i) {
    int64_t r = row_of(ids[i]);
    if (r < 0) throw Error(dir_, "no item with id " + std::to_string(ids[i]));
    order.push_back({r, i});
  }
  std::sort(order.begin(), order.end());
  std::vector<int64_t> rows;
  for (auto& [r, i] : order)
    if (rows.empty() || rows.back() != r) rows.push_back(r);
  auto got = meta_->read_embeddings(rows);
  auto out = torch::empty({int64_t(ids.size()), info_.dim}, torch::kFloat32);
  size_t j = 0;
  for (size_t o = 0; o < order.size(); ++o) {
    if (o > 0 && order[o].first != order[o - 1].first) ++j;
    out[int64_t(order[o].second)].copy_(got[int64_t(j)]);
  }
  return out;
}

index::KnnResult merge_results(const std::vector<index::KnnResult>& parts, int k) {
  if (parts.size() == 1 && parts[0].indices.size(1) == k) return parts[0];
  std::vector<torch::Tensor> s, i;
  for (const auto& p : parts) s.push_back(p.similarities), i.push_back(p.indices);
  auto sims = torch::cat(s, 1), ids = torch::cat(i, 1);
  const int64_t kk = std::min<int64_t>(k, sims.size(1));
  auto top = sims.topk(kk, 1, true, true);
  index::KnnResult r{torch::full({sims.size(0), k}, -1, torch::kLong),
                     torch::full({sims.size(0), k}, -std::numeric_limits<float>::infinity(), torch::kFloat)};
  r.similarities.narrow(1, 0, kk).copy_(std::get<0>(top));
  r.indices.narrow(1, 0, kk).copy_(ids.gather(1, std::get<1>(top)));
  return r;
}

index::KnnResult IndexHandle::search_ids(const torch::Tensor& queries, int k, const index::IdSet* allowed,
                                         index::FilterStats* stats) {
  const int fetch = std::max(k, info_.rerank);
  if (!allowed) allowed = live_ids();
  auto one = [&](const index::AnnIndex& a) {
    if (!allowed) return a.search(queries, fetch);
    index::FilterStats st;
    auto r = a.search(queries, fetch, *allowed, &st);
    if (stats) {
      stats->in_faiss = st.in_faiss;
      stats->exact = st.exact;
      stats->fetched = std::max(stats->fetched, st.fetched);
      stats->exhausted = stats->exhausted || st.exhausted;
    }
    return r;
  };
  std::vector<index::KnnResult> parts{one(ann())};
  if (added_) parts.push_back(one(*added_));
  auto res = merge_results(parts, fetch);
  if (info_.rerank <= k || !meta_->has_embeddings()) return fetch == k ? res : merge_results({res}, k);
  // Exact re-rank: the candidates' vectors from the vectors file, by id, scored exactly.
  auto cand = res.indices.contiguous();
  std::vector<int64_t> want;
  for (int64_t j = 0; j < cand.numel(); ++j)
    if (cand.data_ptr<int64_t>()[j] >= 0) want.push_back(cand.data_ptr<int64_t>()[j]);
  std::sort(want.begin(), want.end());
  want.erase(std::unique(want.begin(), want.end()), want.end());
  if (want.empty()) return merge_results({res}, k);
  auto vecs = vectors(want);  // want is sorted: row j holds want[j]
  auto pos = torch::searchsorted(torch::from_blob(want.data(), {int64_t(want.size())}, torch::kLong),
                                 cand.clamp_min(0));
  auto cv = vecs.index_select(0, pos.flatten()).view({cand.size(0), cand.size(1), info_.dim});
  auto exact = torch::bmm(cv, queries.unsqueeze(2)).squeeze(2);
  if (info_.recipe.metric == "l2") exact = 2 * exact - cv.pow(2).sum(2) - queries.pow(2).sum(1, true);
  exact.masked_fill_(cand.lt(0), -std::numeric_limits<float>::infinity());
  return merge_results({{cand, exact}}, k);
}

Hit IndexHandle::describe(int64_t id, float score) {
  Hit h;
  h.id = id;
  h.score = score;
  int64_t r = row_of(id);
  if (r < 0) return h;
  auto row = meta_->read(r, 1, false);
  h.label = row.labels[0];
  h.path = row.paths[0];
  const auto& cats = categories();
  if (h.label >= 0 && size_t(h.label) < cats.size()) h.category = cats[size_t(h.label)];
  return h;
}

std::vector<std::vector<Hit>> IndexHandle::search(const torch::Tensor& queries, int k,
                                                  const std::vector<int64_t>& exclude,
                                                  const index::IdSet* allowed, index::FilterStats* stats) {
  if (k < 1) throw Error("", "-k must be at least 1");
  if (queries.dim() != 2 || queries.size(1) != info_.dim)
    throw Error(dir_, "query dimension " + std::to_string(queries.dim() == 2 ? queries.size(1) : -1) +
                          " differs from the index's " + std::to_string(info_.dim));
  const bool ex = !exclude.empty();
  auto res = search_ids(queries.contiguous(), k + (ex ? 1 : 0), allowed, stats);
  std::vector<std::vector<Hit>> out(size_t(queries.size(0)));
  auto ids = res.indices.accessor<int64_t, 2>();
  auto sims = res.similarities.accessor<float, 2>();
  for (int64_t q = 0; q < queries.size(0); ++q) {
    for (int64_t j = 0; j < res.indices.size(1) && int(out[size_t(q)].size()) < k; ++j) {
      if (ids[q][j] < 0 || (ex && ids[q][j] == exclude[size_t(q)])) continue;
      out[size_t(q)].push_back(describe(ids[q][j], sims[q][j]));
    }
  }
  return out;
}

}  // namespace invp::search

namespace invp::search::detail {

void finish_tuning(const std::string& dir, IndexInfo& info, const TuningSample& s, const BuildOptions& opts) {
  if (opts.rerank > s.k) {
    // Re-ranking recovers what compressed codes lose, so the target is met at a smaller
    // setting than the codes alone need: tune again through the path queries take.
    IndexHandle h(dir);
    if (h.meta().has_embeddings()) {
      auto& ann = h.ann();
      // A few queries at a time: each re-ranks rerank × dim floats read from disk, so the working
      // set stays that of a handful of queries whatever --tune-queries is.
      constexpr int64_t kChunk = 32;
      auto search = [&h](const torch::Tensor& q, int k) {
        std::vector<torch::Tensor> ids;
        for (int64_t b = 0; b < q.size(0); b += kChunk)
          ids.push_back(h.search_ids(q.slice(0, b, std::min(b + kChunk, q.size(0))).contiguous(), k).indices);
        return torch::cat(ids);
      };
      auto tuned = index::tune(ann, s.queries, s.truth, s.k, opts.target_recall, search);
      info.search_params = tuned.params;
      info.rerank_recall = tuned.recall;
      info.queries_per_second = tuned.queries_per_second;
      info.recall = index::recall_at_k(ann.search(s.queries, s.k).indices, s.truth);
      commit(dir, info);
    }
  }
  const double got = info.rerank > s.k && info.rerank_recall > 0 ? info.rerank_recall : info.recall;
  if (got < opts.target_recall)
    log::warn(dir + ": recall@" + std::to_string(info.tuned_k) + " " + std::to_string(got) +
              " stays below the target " + std::to_string(opts.target_recall) + " at the largest setting");
}

}  // namespace invp::search::detail
