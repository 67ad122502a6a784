// Train once, fill in slices, merge (in memory and on disk), add to an on-disk index, search
// several directories as one: every result compared with a single in-memory index or brute force.
#include "search_fixtures.h"
#include "test_paths.h"

#include <invp/core/error.h>
#include <invp/search/index_dir.h>
#include <invp/search/index_dir_detail.h>
#include <invp/search/index_set.h>
#include <invp/store/embedding_store.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <tuple>

namespace {
using namespace invp;
using invp_test::temp_dir;

constexpr int64_t kN = 3000, kDim = 16;

// Clustered unit vectors (ids 0..n-1 + offset), in the embeddings.h5 layout.
store::Rows clustered(int64_t n, int64_t offset, uint64_t seed, double noise = 0.3) {
  torch::manual_seed(seed);
  auto centers = torch::randn({40, kDim});
  auto pick = torch::randint(0, 40, {n}, torch::kLong);
  auto x = centers.index_select(0, pick) + noise * torch::randn({n, kDim});
  store::Rows r;
  r.embeddings = (x / x.norm(2, 1, true)).contiguous();
  for (int64_t i = 0; i < n; ++i) {
    r.ids.push_back(offset + i);
    r.paths.push_back("item" + std::to_string(offset + i));
    r.labels.push_back(int32_t(pick[i].item<int64_t>() % 4));
  }
  return r;
}

std::string write_part(const fs::path& dir, const std::string& name, const store::Rows& rows) {
  store::StoreMeta m;
  m.dim = kDim;
  m.model_hash = "model-a";
  const auto p = (dir / name).string();
  store::write_store(p, m, rows);
  return p;
}

store::Rows slice_rows(const store::Rows& all, int64_t b, int64_t e) {
  store::Rows r;
  r.embeddings = all.embeddings.slice(0, b, e).contiguous();
  r.ids.assign(all.ids.begin() + b, all.ids.begin() + e);
  r.paths.assign(all.paths.begin() + b, all.paths.begin() + e);
  r.labels.assign(all.labels.begin() + b, all.labels.begin() + e);
  return r;
}

// A trained ivf-flat directory and three filled slices of one collection.
struct Sliced {
  fs::path dir;
  store::Rows all;
  std::string trained;
  std::vector<std::string> slices;
};
Sliced make_slices(const std::string& name, const std::string& recipe = "ivf-flat", double noise = 0.3) {
  Sliced s{temp_dir(name), clustered(kN, 0, 3, noise), {}, {}};
  const auto whole = write_part(s.dir, "whole.h5", s.all);
  search::TrainOptions t;
  t.recipe = recipe;
  s.trained = (s.dir / "trained").string();
  search::train_index(whole, s.trained, t);
  const int64_t cut[] = {0, 1000, 2100, kN};
  for (int i = 0; i < 3; ++i) {
    auto part = write_part(s.dir, "part" + std::to_string(i) + ".h5", slice_rows(s.all, cut[i], cut[i + 1]));
    s.slices.push_back((s.dir / ("slice" + std::to_string(i))).string());
    search::fill_slice(s.trained, {part}, s.slices.back());
  }
  return s;
}

search::BuildOptions merge_opts(bool on_disk) {
  search::BuildOptions o;
  o.on_disk = on_disk;
  o.tune_queries = 100;
  return o;
}

// Exhaustive probing makes IVF-Flat exact, so results are comparable with brute force.
void probe_all(search::IndexHandle& h) {
  h.set_search_params({{"nprobe", 1 << 10}});
}

std::vector<int64_t> ids_of(const std::vector<search::Hit>& hits) {
  std::vector<int64_t> v;
  for (auto& h : hits) v.push_back(h.id);
  return v;
}

std::vector<int64_t> brute_force(const torch::Tensor& base, const std::vector<int64_t>& ids, const torch::Tensor& q, int k) {
  auto top = std::get<1>(torch::matmul(base, q).topk(k));
  std::vector<int64_t> v;
  for (int64_t j = 0; j < k; ++j) v.push_back(ids[size_t(top[j].item<int64_t>())]);
  return v;
}

// The tuning and training samples of a big collection: the same rows as a shuffle of all n row
// numbers would give (the oracle below), without holding the n of them.
TEST(SampleRows, EqualsThePrefixOfAFullShuffle) {
  for (auto [n, m, seed] : {std::tuple<int64_t, int64_t, uint64_t>{10, 3, 1}, {1000, 500, 7}, {100000, 37, 3},
                            {5, 5, 2}, {5, 9, 2}, {1, 1, 0}}) {
    std::vector<int64_t> all(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) all[size_t(i)] = i;
    if (m < n) {
      std::mt19937_64 rng(seed ^ 0x5eedULL);
      for (int64_t i = 0; i < m; ++i) std::swap(all[size_t(i)], all[size_t(i + int64_t(rng() % uint64_t(n - i)))]);
      all.resize(size_t(m));
      std::sort(all.begin(), all.end());
    }
    EXPECT_EQ(search::detail::sample_rows(n, m, seed), all) << n << " " << m;
  }
}

// The samples' vectors: blocks holding many wanted rows are read whole, the others row run by
// row run; both must give the rows asked for (the oracle: the whole file indexed).
TEST(SampleRows, GatheredRowsEqualTheWholeFileIndexed) {
  const auto dir = temp_dir("gather");
  const int64_t n = 2 * search::detail::kBlockRows + 500;
  auto all = clustered(n, 0, 5);
  store::EmbeddingReader r(write_part(dir, "rows.h5", all));
  std::vector<int64_t> rows;
  for (int64_t i = 10; i < 10 + search::detail::kSparseRows + 1; ++i) rows.push_back(i);  // block 0: read whole
  for (int64_t i : {int64_t(70000), int64_t(70001), int64_t(90000), int64_t(131071)}) rows.push_back(i);  // block 1: runs
  rows.push_back(n - 1);  // the short last block
  auto got = search::detail::gather_rows(r, rows);
  auto want = all.embeddings.index_select(0, torch::tensor(rows, torch::kLong));
  EXPECT_TRUE(torch::equal(got, want));
  EXPECT_EQ(search::detail::gather_rows(r, {}).size(0), 0);
}

TEST(BigIndex, SlicesMergedEqualOneBuildOfTheTrainedIndex) {
  auto s = make_slices("merge");
  const auto merged = (s.dir / "merged").string();
  auto r = search::merge_slices({s.slices[2], s.slices[0], s.slices[1]}, merged, merge_opts(false));  // any order
  EXPECT_EQ(r.info.size, kN);
  EXPECT_EQ(r.info.next_id, kN);
  EXPECT_GE(r.info.recall, 0.9);
  // The reference: the same trained index with every vector added in one process.
  const auto t = search::read_index_info(s.trained);
  auto one = index::AnnIndex::read((fs::path(s.trained) / "index-1.faiss").string(), t.files.at("index-1.faiss").bytes,
                                   t.files.at("index-1.faiss").xxh3);
  one.add(s.all.embeddings, torch::arange(kN, torch::kLong));
  search::IndexHandle h(merged);
  const std::map<std::string, double> p{{"nprobe", 4}};
  one.set_search_params(p);
  h.ann().set_search_params(p);
  auto q = s.all.embeddings.slice(0, 0, 200).contiguous();
  auto a = one.search(q, 10), b = h.ann().search(q, 10);
  EXPECT_TRUE(torch::equal(a.indices, b.indices));
  EXPECT_TRUE(torch::allclose(a.similarities, b.similarities));
  // Paths and labels come from the joined slices' metadata by id.
  EXPECT_EQ(h.describe(2500, 1).path, "item2500");
  EXPECT_TRUE(torch::equal(h.vectors({2999, 7}), torch::stack({s.all.embeddings[2999], s.all.embeddings[7]})));
  fs::remove_all(s.dir);
}

// With re-ranking, merge tunes nprobe to the target as re-ranked: fewer lists than the codes
// alone need, and the directory then answers at that recall (fresh queries, brute force).
TEST(BigIndex, ReRankedTuningProbesFewerLists) {
  auto s = make_slices("rerank", "ivf-pq", 1.5);  // clusters that overlap: neighbours spread over many lists
  const auto plain_dir = (s.dir / "plain").string(), rr_dir = (s.dir / "rr").string();
  const auto plain = search::merge_slices(s.slices, plain_dir, merge_opts(false)).info;
  auto o = merge_opts(false);
  o.rerank = 50;
  const auto rr = search::merge_slices(s.slices, rr_dir, o).info;
  EXPECT_LT(plain.recall, o.target_recall) << "PQ codes alone reach the target: the test no longer tests";
  EXPECT_GE(rr.rerank_recall, o.target_recall);
  EXPECT_LT(rr.search_params.at("nprobe"), plain.search_params.at("nprobe"));
  EXPECT_LE(rr.recall, rr.rerank_recall);

  search::IndexHandle h(rr_dir);
  EXPECT_EQ(h.info().search_params, rr.search_params);
  EXPECT_DOUBLE_EQ(h.info().rerank_recall, rr.rerank_recall);
  const int k = 10;
  auto q = clustered(300, 0, 11, 1.5).embeddings;
  auto found = h.search_ids(q, k).indices;
  auto truth = std::get<1>(torch::matmul(q, s.all.embeddings.t()).topk(k, 1));  // ids == rows here
  EXPECT_GE(index::recall_at_k(found, truth), o.target_recall - 0.05);
  fs::remove_all(s.dir);
}

TEST(BigIndex, OnDiskEqualsInMemoryAndMoves) {
  auto s = make_slices("ondisk");
  const auto mem = (s.dir / "mem").string(), disk = (s.dir / "disk").string();
  search::merge_slices(s.slices, mem, merge_opts(false));
  auto r = search::merge_slices(s.slices, disk, merge_opts(true));
  ASSERT_FALSE(r.info.ivfdata.empty());
  EXPECT_TRUE(fs::exists(fs::path(disk) / r.info.ivfdata));
  const auto moved = (s.dir / "moved").string();
  fs::rename(disk, moved);  // the .ivfdata is found beside the index, not at the old path
  search::IndexHandle hm(mem), hd(moved);
  EXPECT_TRUE(hd.ann().on_disk());
  EXPECT_FALSE(hm.ann().on_disk());
  EXPECT_EQ(hm.info().search_params, hd.info().search_params);
  auto q = s.all.embeddings.slice(0, 100, 300).contiguous();
  auto a = hm.search(q, 10), b = hd.search(q, 10);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(ids_of(a[i]), ids_of(b[i])) << "query " << i;
  // A truncated lists file is refused before FAISS maps it.
  fs::resize_file(fs::path(moved) / r.info.ivfdata, 100);
  EXPECT_THROW(search::IndexHandle(moved).ann(), Error);
  fs::remove_all(s.dir);
}

TEST(BigIndex, AddToMergedOnDiskIndexKeepsTheListsFile) {
  auto s = make_slices("add");
  const auto disk = (s.dir / "disk").string();
  auto r = search::merge_slices(s.slices, disk, merge_opts(true));
  const auto lists = fs::path(disk) / r.info.ivfdata;
  const auto before = fs::last_write_time(lists);
  auto extra = clustered(300, 0, 9);
  auto a1 = search::add_to_index(disk, slice_rows(extra, 0, 200), "model-a");
  auto a2 = search::add_to_index(disk, slice_rows(extra, 200, 300), "model-a");
  EXPECT_EQ(a1.first_id, kN);
  EXPECT_EQ(a2.size, kN + 300);
  auto info = search::read_index_info(disk);
  EXPECT_EQ(info.ivfdata, r.info.ivfdata);  // the same lists file, not a copy
  EXPECT_EQ(fs::last_write_time(lists), before);
  EXPECT_FALSE(info.added.empty());
  // Exhaustive probing over base + added equals brute force over the union.
  search::IndexHandle h(disk);
  probe_all(h);
  auto base = torch::cat({s.all.embeddings, extra.embeddings});
  std::vector<int64_t> ids(size_t(kN + 300));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t(i);
  auto q = torch::cat({s.all.embeddings.slice(0, 0, 20), extra.embeddings.slice(0, 250, 270)}).contiguous();
  auto hits = h.search(q, 10);
  for (int64_t i = 0; i < q.size(0); ++i) EXPECT_EQ(ids_of(hits[size_t(i)]), brute_force(base, ids, q[i], 10)) << i;
  EXPECT_EQ(h.describe(kN + 299, 1).path, "item299");
  fs::remove_all(s.dir);
}

TEST(BigIndex, SeveralDirectoriesSearchAsTheirUnion) {
  auto s = make_slices("set");
  const auto a = (s.dir / "a").string(), b = (s.dir / "b").string(), all = (s.dir / "all").string();
  // Directories hold contiguous id ranges (parts of one source): the check is by range.
  search::merge_slices({s.slices[1], s.slices[2]}, a, merge_opts(true));
  search::merge_slices({s.slices[0]}, b, merge_opts(false));
  search::merge_slices(s.slices, all, merge_opts(false));
  search::IndexSet set({a, b});
  search::IndexHandle one(all);
  for (size_t i = 0; i < set.count(); ++i) probe_all(set.at(i));
  probe_all(one);
  EXPECT_EQ(set.size(), kN);
  auto q = s.all.embeddings.slice(0, 850, 1150).contiguous();
  std::vector<int64_t> ex;
  for (int64_t i = 850; i < 1150; ++i) ex.push_back(i);
  auto x = set.search(q, 10, ex), y = one.search(q, 10, ex);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(ids_of(x[i]), ids_of(y[i])) << "query " << i;
    EXPECT_EQ(x[i][0].path, y[i][0].path);
  }
  EXPECT_TRUE(torch::equal(set.vectors({1500, 2500}), one.vectors({1500, 2500})));
  // Overlapping ids are refused, in one line naming both.
  try {
    search::IndexSet bad({all, b});
    ADD_FAILURE() << "overlap accepted";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("overlap"), std::string::npos) << w;
    EXPECT_EQ(w.find('\n'), std::string::npos) << w;
  }
  fs::remove_all(s.dir);
}

TEST(BigIndex, MergeRefusesMismatchedSlicesInOneLine) {
  auto s = make_slices("refuse");
  // A slice filled from another training (other sample, same recipe).
  const auto other = (s.dir / "other-trained").string();
  search::TrainOptions t;
  t.recipe = "ivf-flat";
  search::train_index(write_part(s.dir, "sample2.h5", clustered(2000, 0, 5)), other, t);
  const auto stray = (s.dir / "stray").string();
  search::fill_slice(other, {write_part(s.dir, "p9.h5", clustered(100, 5000, 6))}, stray);
  auto refused = [&](const std::vector<std::string>& slices, const std::string& needle) {
    try {
      search::merge_slices(slices, (s.dir / "out").string(), merge_opts(true));
      ADD_FAILURE() << "merge accepted " << needle;
    } catch (const Error& e) {
      const std::string w = e.what();
      EXPECT_NE(w.find(needle), std::string::npos) << w;
      EXPECT_EQ(w.find('\n'), std::string::npos) << w;
    }
  };
  refused({s.slices[0], stray}, "another trained index");
  refused({s.slices[0], s.slices[1], s.slices[0]}, "overlap");
  refused({s.slices[0], s.trained}, "not a slice");
  EXPECT_FALSE(fs::exists(fs::path(s.dir) / "out" / "index.json"));
  fs::remove_all(s.dir);
}

TEST(BigIndex, KilledMergeLeavesThePreviousIndex) {
  auto s = make_slices("kill");
  const auto out = (s.dir / "out").string();
  search::merge_slices({s.slices[0]}, out, merge_opts(true));
  auto q = s.all.embeddings.slice(0, 0, 50).contiguous();
  for (const char* after : {"0.05", "0.2", "0.4", "0.8"}) {
    const std::string cmd = std::string("timeout -s KILL ") + after + " " + invp_test::cli_path() + " index merge --on-disk " +
                            s.slices[0] + " " + s.slices[1] + " " + s.slices[2] + " -o " + out + " >/dev/null 2>&1";
    (void)std::system(cmd.c_str());
    search::IndexHandle h(out);  // whichever generation index.json names, complete
    EXPECT_TRUE(h.info().size == 1000 || h.info().size == kN) << h.info().size;
    auto hits = h.search(q, 5);
    EXPECT_EQ(hits[0].size(), 5u);
  }
  fs::remove_all(s.dir);
}
}  // namespace
