// invp dedup against brute force: groups equal the connected components of an exact all-pairs
// computation (with chains a~b~c whose ends are below the threshold, so components are not
// cliques) on Flat, Flat with the L2 metric, IVF-Flat at full nprobe, HNSW through the top-k
// path and an on-disk IVF index with an added slice; --against equals the brute-force cross
// pairs; another model's index is refused.
#include "search_fixtures.h"

#include <invp/core/error.h>
#include <invp/search/dedup.h>
#include <invp/search/index_dir.h>
#include <invp/store/embedding_store.h>

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>

namespace {
using namespace invp;
using invp_test::temp_dir;

constexpr int64_t kDim = 64;
constexpr double kThreshold = 0.9;

torch::Tensor unit(const torch::Tensor& x) { return x / x.norm(2, -1, true); }

// Random unit vectors (far apart in 64-d) plus planted near-duplicates: tight clusters of
// noisy copies, one cluster larger than the top-k path's first k, exact copies, and chains
// a, b, c in one plane with cos(a,b) = cos(b,c) above the threshold and cos(a,c) below it.
torch::Tensor planted(int64_t random_rows, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> parts{unit(torch::randn({random_rows, kDim}))};
  for (int c = 0; c < 12; ++c) {
    auto centre = unit(torch::randn({1, kDim}));
    const int64_t copies = c == 0 ? 40 : 2 + c % 4;
    parts.push_back(unit(centre + 0.03 * torch::randn({copies, kDim})));
  }
  auto exact = unit(torch::randn({1, kDim}));
  parts.push_back(exact.repeat({3, 1}));
  const double step = std::acos(0.95);  // cos(step) above the threshold, cos(2·step) below
  for (int c = 0; c < 6; ++c) {
    auto a = unit(torch::randn({kDim}));
    auto u = torch::randn({kDim});
    u = unit(u - (u * a).sum() * a);
    const int links = 3 + c % 2;  // chains of 3 and 4
    for (int i = 0; i < links; ++i) parts.push_back((std::cos(i * step) * a + std::sin(i * step) * u).unsqueeze(0));
  }
  auto x = torch::cat(parts, 0);
  return x.index_select(0, torch::randperm(x.size(0), torch::kLong)).contiguous();  // duplicates scattered
}

// Rows first..first+n-1 of a collection (ids are reassigned by index add; paths name the row).
store::Rows rows_of(const torch::Tensor& x, int64_t first = 0) {
  store::Rows r;
  r.embeddings = x.to(torch::kFloat32).contiguous();
  for (int64_t i = first; i < first + x.size(0); ++i) {
    r.ids.push_back(i);
    r.paths.push_back("item" + std::to_string(i) + ".png");
    r.labels.push_back(int32_t(i % 3));
  }
  return r;
}

std::string write_embeddings(const fs::path& dir, const std::string& name, const torch::Tensor& x,
                             const std::string& model_hash = "model-a") {
  store::StoreMeta m;
  m.dim = kDim;
  m.model_hash = model_hash;
  const auto p = (dir / name).string();
  store::write_store(p, m, rows_of(x));
  return p;
}

std::string build(const fs::path& dir, const std::string& name, const torch::Tensor& x, const std::string& recipe,
                  const std::string& model_hash = "model-a") {
  search::BuildOptions o;
  o.recipe = recipe;
  o.tune_queries = 100;
  const auto out = (dir / name).string();
  search::build_index(write_embeddings(dir, name + ".h5", x, model_hash), out, o);
  return out;
}

// The oracle: every pair by exact all-pairs cosine (double), components by BFS, representative
// by mean cosine to the rest of the component (ties: smallest id).
struct Oracle {
  std::set<std::pair<int64_t, int64_t>> pairs;
  std::map<std::vector<int64_t>, int64_t> groups;  // members (ascending) → representative
};
Oracle oracle(const torch::Tensor& x, double t) {
  auto v = unit(x.to(torch::kFloat64));
  auto g = torch::matmul(v, v.t());
  auto acc = g.accessor<double, 2>();
  const int64_t n = x.size(0);
  Oracle o;
  std::vector<std::vector<int64_t>> adj(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j)
      if (acc[i][j] >= t) o.pairs.insert({i, j}), adj[size_t(i)].push_back(j), adj[size_t(j)].push_back(i);
  std::vector<bool> seen(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) {
    if (seen[size_t(s)] || adj[size_t(s)].empty()) continue;
    std::vector<int64_t> members{s};
    seen[size_t(s)] = true;
    for (size_t k = 0; k < members.size(); ++k)
      for (int64_t m : adj[size_t(members[k])])
        if (!seen[size_t(m)]) seen[size_t(m)] = true, members.push_back(m);
    std::sort(members.begin(), members.end());
    int64_t rep = -1;
    double best = -2;
    for (int64_t i : members) {
      double sum = 0;
      for (int64_t j : members) sum += i == j ? 0 : acc[i][j];
      if (sum / double(members.size() - 1) > best + 1e-12) best = sum / double(members.size() - 1), rep = i;
    }
    o.groups[members] = rep;
  }
  return o;
}

std::map<std::vector<int64_t>, int64_t> groups_of(const std::vector<search::DedupGroup>& groups) {
  std::map<std::vector<int64_t>, int64_t> out;
  for (auto& g : groups) {
    std::vector<int64_t> m;
    for (auto& h : g.items) m.push_back(h.id);
    std::sort(m.begin(), m.end());
    out[m] = g.representative;
  }
  return out;
}

void expect_oracle(search::IndexHandle& h, const torch::Tensor& x, const std::string& method, int k = 16) {
  search::DedupOptions o;
  o.threshold = kThreshold;
  o.k = k;
  search::DedupStats st;
  auto pairs = search::duplicate_pairs(h, o, &st);
  EXPECT_EQ(st.method, method);
  EXPECT_EQ(st.queried, x.size(0));
  const auto want = oracle(x, kThreshold);
  std::set<std::pair<int64_t, int64_t>> got;
  for (auto& p : pairs) got.insert({p.a, p.b});
  EXPECT_EQ(got, want.pairs);
  auto groups = search::group_duplicates(h, pairs);
  EXPECT_EQ(groups_of(groups), want.groups);
  // Biggest first, ties by representative; representative first with score 1; scores are the
  // exact cosine to it.
  for (size_t i = 1; i < groups.size(); ++i) {
    const auto& a = groups[i - 1];
    const auto& b = groups[i];
    EXPECT_TRUE(a.items.size() > b.items.size() ||
                (a.items.size() == b.items.size() && a.representative < b.representative));
  }
  auto v = unit(x.to(torch::kFloat64));
  for (auto& g : groups) {
    ASSERT_EQ(g.items[0].id, g.representative);
    EXPECT_FLOAT_EQ(g.items[0].score, 1.f);
    for (auto& it : g.items) {
      EXPECT_NEAR(it.score, (v[it.id] * v[g.representative]).sum().item<double>(), 1e-5);
      EXPECT_EQ(it.path, "item" + std::to_string(it.id) + ".png");
    }
  }
}

TEST(Dedup, FlatGroupsEqualConnectedComponentsOfAllPairs) {
  auto dir = temp_dir("dedup_flat");
  auto x = planted(1500, 1);
  search::IndexHandle h(build(dir, "flat", x, "flat"));
  expect_oracle(h, x, "range search");
  // The planted chains make components that are not cliques.
  const auto want = oracle(x, kThreshold);
  size_t not_clique = 0;
  for (auto& [m, rep] : want.groups) {
    size_t links = 0;
    for (auto& p : want.pairs) links += std::binary_search(m.begin(), m.end(), p.first);
    not_clique += links < m.size() * (m.size() - 1) / 2;
  }
  EXPECT_GE(not_clique, 6u);
  fs::remove_all(dir);
}

TEST(Dedup, L2MetricRecipeThresholdIsStillCosine) {
  auto dir = temp_dir("dedup_l2");
  std::ofstream((dir / "flat-l2.toml").string()) << "[index]\nname = \"flat-l2\"\nfactory = \"Flat\"\nmetric = \"l2\"\n";
  auto x = planted(800, 2);
  search::IndexHandle h(build(dir, "l2", x, (dir / "flat-l2.toml").string()));
  expect_oracle(h, x, "range search");
  fs::remove_all(dir);
}

TEST(Dedup, IvfFlatAtFullNprobeFindsEveryPair) {
  auto dir = temp_dir("dedup_ivf");
  auto x = planted(2500, 3);
  search::IndexHandle h(build(dir, "ivf", x, "ivf-flat"));
  h.set_search_params({{"nprobe", 1 << 10}});
  expect_oracle(h, x, "range search");
  fs::remove_all(dir);
}

TEST(Dedup, HnswTopKPathDoublesKUntilTheCut) {
  auto dir = temp_dir("dedup_hnsw");
  auto x = planted(1500, 4);
  search::IndexHandle h(build(dir, "hnsw", x, "hnsw"));
  h.set_search_params({{"efSearch", 512}});
  // k 4 is far below the largest group (40 copies): only doubling finds all of its pairs.
  expect_oracle(h, x, "top-k", 4);
  fs::remove_all(dir);
}

TEST(Dedup, OnDiskListsAndTheAddedSliceAreBothSearched) {
  auto dir = temp_dir("dedup_ondisk");
  auto x = planted(2500, 5);
  const int64_t first = x.size(0) - 300;
  search::BuildOptions o;
  o.recipe = "ivf-flat";
  o.on_disk = true;
  o.tune_queries = 100;
  const auto idx = (dir / "idx").string();
  search::build_index(write_embeddings(dir, "first.h5", x.slice(0, 0, first)), idx, o);
  search::add_to_index(idx, rows_of(x.slice(0, first), first), "model-a");
  search::IndexHandle h(idx);
  ASSERT_FALSE(h.info().added.empty());
  ASSERT_NE(h.added_slice(), nullptr);
  h.set_search_params({{"nprobe", 1 << 10}});
  expect_oracle(h, x, "range search");
  fs::remove_all(dir);
}

TEST(Dedup, AgainstEqualsBruteForceCrossPairs) {
  auto dir = temp_dir("dedup_against");
  auto a = planted(600, 6);
  torch::manual_seed(7);
  // B: noisy copies of every fifth item of A, among unrelated items.
  auto picked = a.index_select(0, torch::arange(0, a.size(0), 5, torch::kLong));
  auto b = torch::cat({unit(picked + 0.02 * torch::randn(picked.sizes())), unit(torch::randn({400, kDim}))}).contiguous();
  search::IndexHandle ha(build(dir, "a", a, "flat"));
  search::IndexHandle hb(build(dir, "b", b, "hnsw"));
  hb.set_search_params({{"efSearch", 512}});
  search::DedupOptions o;
  o.threshold = kThreshold;
  auto pairs = search::cross_pairs(ha, hb, o);
  auto g = torch::matmul(unit(a.to(torch::kFloat64)), unit(b.to(torch::kFloat64)).t());
  std::set<std::pair<int64_t, int64_t>> want, got;
  for (int64_t i = 0; i < g.size(0); ++i)
    for (int64_t j = 0; j < g.size(1); ++j)
      if (g[i][j].item<double>() >= kThreshold) want.insert({i, j});
  for (auto& p : pairs) got.insert({p.a, p.b});
  EXPECT_GE(want.size(), size_t(picked.size(0)));
  EXPECT_EQ(got, want);
  auto matches = search::cross_matches(ha, hb, pairs);
  size_t n = 0;
  for (auto& m : matches) {
    n += m.matches.size();
    for (size_t i = 1; i < m.matches.size(); ++i) EXPECT_GE(m.matches[i - 1].score, m.matches[i].score);
  }
  EXPECT_EQ(n, want.size());
  fs::remove_all(dir);
}

TEST(Dedup, AgainstAnotherModelsIndexIsRefused) {
  auto dir = temp_dir("dedup_model");
  auto x = planted(200, 8);
  search::IndexHandle ha(build(dir, "a", x, "flat", "model-a"));
  search::IndexHandle hb(build(dir, "b", x, "flat", "model-b"));
  search::DedupOptions o;
  try {
    search::cross_pairs(ha, hb, o);
    FAIL() << "a model mismatch was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model hash differs"), std::string::npos) << e.what();
    EXPECT_EQ(e.file(), hb.dir());
  }
  fs::remove_all(dir);
}

TEST(Dedup, AutoThresholdFallsInTheValleyOrFallsBack) {
  torch::manual_seed(9);
  std::vector<float> nn;
  auto bulk = (0.7 + 0.05 * torch::randn({5000})).clamp(-1, 1);
  auto dupes = (0.985 + 0.005 * torch::randn({300})).clamp(-1, 1);
  for (int64_t i = 0; i < bulk.size(0); ++i) nn.push_back(bulk[i].item<float>());
  auto only_bulk = nn;
  for (int64_t i = 0; i < dupes.size(0); ++i) nn.push_back(dupes[i].item<float>());
  auto p = search::propose_threshold(nn, 0.95);
  EXPECT_TRUE(p.from_valley) << p.reason;
  EXPECT_GT(p.threshold, 0.85);
  EXPECT_LT(p.threshold, 0.97);
  int64_t total = 0;
  for (auto c : p.counts) total += c;
  EXPECT_EQ(total, int64_t(nn.size()));
  auto q = search::propose_threshold(only_bulk, 0.95);
  EXPECT_FALSE(q.from_valley) << q.reason;
  EXPECT_DOUBLE_EQ(q.threshold, 0.95);
  EXPECT_FALSE(search::propose_threshold({}, 0.9).from_valley);
}

TEST(Dedup, NearestNeighbourSimilaritiesAreExact) {
  auto dir = temp_dir("dedup_nn");
  auto x = planted(300, 10);
  search::IndexHandle h(build(dir, "flat", x, "flat"));
  auto nn = search::nearest_neighbour_similarities(h, {});
  ASSERT_EQ(int64_t(nn.size()), x.size(0));
  auto v = unit(x.to(torch::kFloat64));
  auto g = torch::matmul(v, v.t()) - 3 * torch::eye(x.size(0), torch::kFloat64);
  auto best = std::get<0>(g.max(1));
  for (int64_t i = 0; i < x.size(0); ++i) EXPECT_NEAR(nn[size_t(i)], best[i].item<double>(), 1e-5) << i;
  fs::remove_all(dir);
}

}  // namespace
