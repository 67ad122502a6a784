#include <invp/core/error.h>
#include <invp/graph/knn_graph.h>
#include <invp/graph/propagate.h>
#include <invp/index/exact_knn.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <set>
#include <vector>

using invp::graph::KnnGraph;
using invp::graph::propagate;
using invp::graph::PropagationMode;

namespace {

at::Tensor ids(std::vector<int64_t> v) { return at::tensor(v, at::kLong); }

KnnGraph hand_graph(std::vector<int64_t> flat, int64_t k) {
  KnnGraph g;
  g.neighbors = ids(flat).view({int64_t(flat.size()) / k, k}).clone();
  return g;
}

std::vector<int64_t> row(const at::Tensor& t, int64_t r) {
  auto x = t[r].contiguous();
  return std::vector<int64_t>(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel());
}

// 6 nodes, k=2; cycles back to 0 (1→0, 3→0) and a duplicate at hop 2 (3 via 1 and 2).
KnnGraph six() { return hand_graph({1, 2, 0, 3, 3, 4, 5, 0, 5, 2, 3, 4}, 2); }

at::Tensor normalised(int64_t n, int64_t d, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto x = at::randn({n, d}, gen, at::kFloat);
  return (x / x.norm(2, {1}, true)).contiguous();
}

}  // namespace

TEST(KnnGraph, BuildMatchesExactKnn) {
  auto bank = normalised(120, 8, 11);
  auto g = KnnGraph::build(bank, 4, /*tile_rows=*/17);
  auto nn = invp::index::knn_inner_product(bank, bank, 4, true);
  ASSERT_EQ(g.neighbors.sizes(), (at::IntArrayRef{120, 4}));
  EXPECT_TRUE(g.neighbors.equal(nn.indices));
  EXPECT_EQ(g.k(), 4);
  EXPECT_EQ(g.num_nodes(), 120);
  auto ar = at::arange(120, at::kLong).unsqueeze(1);
  EXPECT_FALSE(g.neighbors.eq(ar).any().item<bool>()) << "self must be excluded";
  auto s = g.stats();
  EXPECT_GE(s.build_seconds, 0.0);
  EXPECT_NEAR(s.mean_similarity, nn.similarities.mean().item<float>(), 1e-5);
  EXPECT_EQ(s.same_label_share, -1.0);
  EXPECT_GE(s.mutual_share, 0.0);
  EXPECT_LE(s.mutual_share, 1.0);
  EXPECT_THROW(KnnGraph::build(bank, 120), invp::Error);
  EXPECT_THROW(KnnGraph::build(bank.flatten(), 2), invp::Error);
}

// A distributed graph build: each rank's row slice, gathered, is the whole graph exactly.
TEST(KnnGraph, RowSlicesMakeTheWholeGraph) {
  auto bank = normalised(301, 16, 12);
  auto whole = KnnGraph::build(bank, 5);
  std::vector<at::Tensor> idx, sim;
  for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 101}, {101, 202}, {202, 301}}) {
    auto part = KnnGraph::build_rows(bank, 5, b, e);
    ASSERT_EQ(part.neighbors.size(0), e - b);
    idx.push_back(part.neighbors);
    sim.push_back(part.similarities);
  }
  EXPECT_TRUE(at::cat(idx).equal(whole.neighbors));
  // The same products, tiled differently by BLAS: equal to the last bits or so.
  EXPECT_TRUE(at::allclose(at::cat(sim), whole.similarities, 0, 1e-6));
  EXPECT_THROW(KnnGraph::build_rows(bank, 5, 200, 400), invp::Error);
}

// The IVF build returns real edges (checked in tests/index) and, on a bank with cluster
// structure, nearly the exact graph; its similarities feed the same statistics.
TEST(KnnGraph, IvfBuildIsNearlyTheExactGraph) {
  auto gen = at::detail::createCPUGenerator(5);
  auto centres = at::randn({30, 16}, gen, at::kFloat);
  auto bank = centres.index_select(0, at::randint(30, {3000}, gen, at::kLong)) +
              0.2 * at::randn({3000, 16}, gen, at::kFloat);
  bank = (bank / bank.norm(2, {1}, true)).contiguous();
  auto exact = KnnGraph::build(bank, 4);
  auto ivf = KnnGraph::build_ivf(bank, 4, /*probes=*/8, /*seed=*/1);
  ASSERT_EQ(ivf.neighbors.sizes(), exact.neighbors.sizes());
  // Share of exact edges present in the IVF row (order-free).
  auto hit = (ivf.neighbors.unsqueeze(2) == exact.neighbors.unsqueeze(1)).any(2);
  EXPECT_GE(hit.to(at::kDouble).mean().item<double>(), 0.97);
  EXPECT_FALSE(ivf.neighbors.eq(at::arange(3000, at::kLong).unsqueeze(1)).any().item<bool>());
  EXPECT_LE(ivf.stats().mean_similarity, exact.stats().mean_similarity + 1e-6);
  EXPECT_GT(ivf.build_seconds, 0.0);
}

TEST(KnnGraph, StatsOnHandMadeGraph) {
  // 0→{1,2} 1→{0,3} 2→{3,1} 3→{2,0}: reverse edges exist for 0↔1 and 2↔3 only → 4/8.
  auto g = hand_graph({1, 2, 0, 3, 3, 1, 2, 0}, 2);
  g.similarities = at::tensor({0.9f, 0.5f, 0.9f, 0.1f, 0.3f, 0.2f, 0.4f, 0.1f}).view({4, 2});
  auto s = g.stats(ids({0, 0, 1, -1}));
  EXPECT_DOUBLE_EQ(s.mutual_share, 0.5);
  EXPECT_NEAR(s.mean_similarity, 3.4 / 8, 1e-6);
  // Edges with two known labels: 0→1 same, 0→2 diff, 1→0 same, 2→1 diff → 2/4.
  EXPECT_DOUBLE_EQ(s.same_label_share, 0.5);
  EXPECT_DOUBLE_EQ(g.stats(ids({0, 1, 2, 3})).same_label_share, 0.0);
  EXPECT_DOUBLE_EQ(g.stats(ids({7, 7, 7, 7})).same_label_share, 1.0);
  EXPECT_DOUBLE_EQ(g.stats(ids({-1, -1, -1, -1})).same_label_share, -1.0);
  EXPECT_THROW(g.stats(ids({0, 1})), invp::Error);
  // Fully mutual graph: a 2-cycle pair and a 2-cycle pair.
  EXPECT_DOUBLE_EQ(hand_graph({1, 0, 3, 2}, 1).stats().mutual_share, 1.0);
}

TEST(KnnGraph, OnlineModeUpdatesRows) {
  auto g = KnnGraph::zeros(5, 2);
  EXPECT_TRUE(g.neighbors.equal(at::zeros({5, 2}, at::kLong)));
  EXPECT_TRUE(std::isnan(g.stats().mean_similarity));
  g.update_rows(ids({1, 3}), ids({2, 4, 0, 1}).view({2, 2}));
  EXPECT_EQ(row(g.neighbors, 1), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(row(g.neighbors, 3), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(row(g.neighbors, 0), (std::vector<int64_t>{0, 0}));
  EXPECT_THROW(g.update_rows(ids({5}), ids({0, 1}).view({1, 2})), invp::Error);
  EXPECT_THROW(g.update_rows(ids({1}), ids({0, 5}).view({1, 2})), invp::Error);
  EXPECT_THROW(g.update_rows(ids({1}), ids({0, 1, 2}).view({1, 3})), invp::Error);
  EXPECT_THROW(g.update_rows(ids({1, 2}), ids({0, 1}).view({1, 2})), invp::Error);
  EXPECT_THROW(KnnGraph::zeros(0, 2), invp::Error);
  EXPECT_THROW(KnnGraph::zeros(3, 0), invp::Error);

  // A built graph keeps similarities only when updates bring them.
  auto b = KnnGraph::build(normalised(10, 4, 3), 2);
  b.update_rows(ids({0}), ids({1, 2}).view({1, 2}), at::tensor({0.5f, 0.25f}).view({1, 2}));
  EXPECT_FLOAT_EQ(b.similarities[0][1].item<float>(), 0.25f);
  b.update_rows(ids({0}), ids({1, 2}).view({1, 2}));
  EXPECT_FALSE(b.similarities.defined());
}

TEST(Propagate, BfsHandMade) {
  auto g = six();
  EXPECT_EQ(row(propagate(g, ids({0}), 1, PropagationMode::Bfs), 0),
            (std::vector<int64_t>{1, 2}));
  // Hop 2 reaches 0 (anchor, dropped), 3 twice (kept once) and 4.
  EXPECT_EQ(row(propagate(g, ids({0}), 2, PropagationMode::Bfs), 0),
            (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(row(propagate(g, ids({0}), 3, PropagationMode::Bfs), 0),
            (std::vector<int64_t>{1, 2, 3, 4, 5}));
  // Depth beyond the graph's reach: every other node once, never more.
  EXPECT_EQ(row(propagate(g, ids({0}), 10), 0), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  // Batch rows of different lengths are padded with −1; anchor 4 is its own 2-hop node.
  auto r = propagate(g, ids({0, 4}), 2, PropagationMode::Bfs);
  ASSERT_EQ(r.sizes(), (at::IntArrayRef{2, 4}));
  EXPECT_EQ(row(r, 1), (std::vector<int64_t>{5, 2, 3, -1}));
  // Repeated anchors in one batch give identical rows.
  auto rep = propagate(g, ids({2, 2}), 2);
  EXPECT_TRUE(rep[0].equal(rep[1]));
  EXPECT_EQ(propagate(g, ids({}), 2).size(0), 0);
}

TEST(Propagate, KeepSameLabelDropsOtherLabelsAndUnknowns) {
  auto g = six();
  // Labels of nodes 0..5; node 5's is unknown (−1).
  auto labels = ids({7, 7, 8, 7, 8, -1});
  auto r = invp::graph::keep_same_label(propagate(g, ids({0, 4}), 2), ids({0, 4}), labels);
  // Anchor 0 (label 7): {1, 2, 3, 4} keeps 1 and 3, in place. Anchor 4 (label 8): {5, 2, 3, −1}
  // keeps 2 only; the unknown 5 and the padding stay −1.
  EXPECT_EQ(row(r, 0), (std::vector<int64_t>{1, -1, 3, -1}));
  EXPECT_EQ(row(r, 1), (std::vector<int64_t>{-1, 2, -1, -1}));
  // An anchor with an unknown label keeps nothing; an empty batch stays empty.
  EXPECT_EQ(row(invp::graph::keep_same_label(propagate(g, ids({5}), 1), ids({5}), labels), 0),
            (std::vector<int64_t>{-1, -1}));
  EXPECT_EQ(invp::graph::keep_same_label(propagate(g, ids({}), 2), ids({}), labels).size(0), 0);
}

TEST(Propagate, ConcatHandMade) {
  auto g = six();
  auto r2 = propagate(g, ids({0}), 2, PropagationMode::Concat);
  // hop1 = [1,2], hop2 = nb[1] ++ nb[2] = [0,3,3,4]: anchor 0 and duplicate 3 are kept.
  EXPECT_EQ(row(r2, 0), (std::vector<int64_t>{1, 2, 0, 3, 3, 4}));
  auto r3 = propagate(g, ids({0, 5}), 3, PropagationMode::Concat);
  ASSERT_EQ(r3.sizes(), (at::IntArrayRef{2, 2 + 4 + 8}));
  EXPECT_EQ(row(r3, 0), (std::vector<int64_t>{1, 2, 0, 3, 3, 4, 1, 2, 5, 0, 5, 0, 5, 2}));
  EXPECT_EQ(row(propagate(g, ids({5}), 1, PropagationMode::Concat), 0),
            (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(propagate(g, ids({}), 3, PropagationMode::Concat).sizes(),
            (at::IntArrayRef{0, 14}));
}

TEST(Propagate, RandomGraphLengthsAndBfsOracle) {
  auto g = KnnGraph::build(normalised(50, 6, 21), 4);
  auto anchors = at::arange(50, at::kLong);
  auto c = propagate(g, anchors, 3, PropagationMode::Concat);
  EXPECT_EQ(c.sizes(), (at::IntArrayRef{50, 4 + 16 + 64}));  // 84, as in docs/ALGORITHM.md
  EXPECT_FALSE(c.lt(0).any().item<bool>());
  auto b = propagate(g, anchors, 3, PropagationMode::Bfs);
  for (int64_t a = 0; a < 50; ++a) {
    // Oracle: the distinct ids among the concat row, anchor removed, = BFS within depth.
    std::set<int64_t> want;
    for (int64_t v : row(c, a))
      if (v != a) want.insert(v);
    std::vector<int64_t> got;
    for (int64_t v : row(b, a))
      if (v >= 0) got.push_back(v);
    EXPECT_EQ(std::set<int64_t>(got.begin(), got.end()), want) << "anchor " << a;
    EXPECT_EQ(got.size(), want.size()) << "BFS must not repeat nodes";
    // Hop 1 comes first, in neighbour order.
    EXPECT_EQ(std::vector<int64_t>(got.begin(), got.begin() + 4), row(g.neighbors, a));
  }
}

TEST(Propagate, InvalidInputsThrow) {
  auto g = six();
  for (auto m : {PropagationMode::Bfs, PropagationMode::Concat}) {
    EXPECT_THROW(propagate(g, ids({0}), 0, m), invp::Error);
    EXPECT_THROW(propagate(g, ids({6}), 1, m), invp::Error);
    EXPECT_THROW(propagate(g, ids({-1}), 1, m), invp::Error);
    EXPECT_THROW(propagate(g, ids({0, 1}).view({1, 2}), 1, m), invp::Error);
    EXPECT_THROW(propagate(g, at::tensor({0.0f}), 1, m), invp::Error);
    EXPECT_THROW(propagate(KnnGraph(), ids({0}), 1, m), invp::Error);
    EXPECT_THROW(propagate(hand_graph({1, 9}, 1), ids({0}), 1, m), invp::Error);
  }
  // k^depth overflow is refused before allocating.
  EXPECT_THROW(propagate(KnnGraph::zeros(4, 200), ids({0}), 5, PropagationMode::Concat),
               invp::Error);
}

// bfs_hops (lazy, hop by hop) walks the same nodes in the same order as propagate(Bfs).
TEST(BfsHops, MatchesVectorisedBfsOnRandomGraphs) {
  for (int trial = 0; trial < 5; ++trial) {
    const int64_t n = 60;
    const int k = 3;
    auto nb = at::randint(0, n, {n, k}, at::kLong);
    invp::graph::KnnGraph g;
    g.neighbors = nb;
    auto anchors = at::arange(0, n, at::kLong);
    auto prop = invp::graph::propagate(g, anchors, 3, invp::graph::PropagationMode::Bfs);
    auto row_of = [&](int64_t i) {
      std::vector<int64_t> r(nb[i].data_ptr<int64_t>(), nb[i].data_ptr<int64_t>() + k);
      return r;
    };
    for (int64_t a = 0; a < n; ++a) {
      auto hops = invp::graph::bfs_hops(row_of, a, 3);
      std::vector<int64_t> flat;
      for (auto& h : hops) flat.insert(flat.end(), h.begin(), h.end());
      std::vector<int64_t> expect;
      for (int64_t j = 0; j < prop.size(1); ++j)
        if (prop[a][j].item<int64_t>() >= 0) expect.push_back(prop[a][j].item<int64_t>());
      ASSERT_EQ(flat, expect) << "anchor " << a;
      ASSERT_LE(hops.size(), 3u);
    }
  }
}

TEST(BfsHops, VirtualAnchorUsesFirstHopAndDepth) {
  // Path graph 0→1→2→3→4; virtual anchor reaching {2}: hops {2}, {3}, {4}.
  auto row_of = [](int64_t i) { return std::vector<int64_t>{i < 4 ? i + 1 : 4}; };
  auto hops = invp::graph::bfs_hops(row_of, -1, 3, {2});
  ASSERT_EQ(hops.size(), 3u);
  EXPECT_EQ(hops[0], std::vector<int64_t>{2});
  EXPECT_EQ(hops[1], std::vector<int64_t>{3});
  EXPECT_EQ(hops[2], std::vector<int64_t>{4});
  EXPECT_THROW(invp::graph::bfs_hops(row_of, 0, 0), invp::Error);
}

namespace {
// Share of rows whose neighbour SETS agree; rows that differ only where similarities tie
// (|Δ| < 1e-6 at the k-th place) count as agreeing.
double neighbour_set_agreement(const KnnGraph& a, const KnnGraph& b) {
  int64_t same = 0;
  const int64_t n = a.num_nodes();
  for (int64_t i = 0; i < n; ++i) {
    auto ra = row(a.neighbors, i), rb = row(b.neighbors, i);
    if (std::set<int64_t>(ra.begin(), ra.end()) == std::set<int64_t>(rb.begin(), rb.end())) {
      ++same;
      continue;
    }
    const int k = a.k();
    float ka = a.similarities[i][k - 1].item<float>(), kb = b.similarities[i][k - 1].item<float>();
    if (std::fabs(ka - kb) < 1e-6f) ++same;
  }
  return double(same) / double(n);
}

// g against a reference graph of the same bank: on the host, the same neighbour sets (ties
// aside) and similarities, self excluded.
void expect_same_graph(const KnnGraph& g, const KnnGraph& ref) {
  ASSERT_EQ(g.neighbors.sizes(), ref.neighbors.sizes());
  EXPECT_TRUE(g.neighbors.device().is_cpu());
  EXPECT_GE(neighbour_set_agreement(ref, g), 0.999);
  EXPECT_TRUE(at::allclose(g.similarities, ref.similarities, 1e-5, 1e-5));
  auto ar = at::arange(g.num_nodes(), at::kLong).unsqueeze(1);
  EXPECT_FALSE(g.neighbors.eq(ar).any().item<bool>()) << "self must be excluded";
}

// Duplicate rows (bank rows 0-9 twice): each finds its twin, not itself.
void expect_twins_found(const at::Tensor& bank, const std::function<KnnGraph(const at::Tensor&)>& build) {
  auto twins = at::cat({bank.slice(0, 0, 10), bank.slice(0, 0, 10)});
  auto tg = build(twins);
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(tg.neighbors[i][0].item<int64_t>(), i + 10);
}
}  // namespace

// The device path (tiled LibTorch matmul + top-k, used for a bank on a GPU) against the
// FAISS graph, here on the CPU: the same neighbour sets and similarities.
TEST(KnnGraph, TensorOpsBuildMatchesFaiss) {
  auto bank = normalised(3000, 32, 5);
  auto f = KnnGraph::build(bank, 4);
  auto t = KnnGraph::build_tensor_ops(bank, 4, /*tile_rows=*/700);
  expect_same_graph(t, f);
  // The self entry is masked by position, so a twin is still found.
  expect_twins_found(bank, [](const at::Tensor& b) { return KnnGraph::build_tensor_ops(b, 1); });
  EXPECT_THROW(KnnGraph::build_tensor_ops(bank, 3000), invp::Error);
}

// On a GPU: the CUDA graph of a 60k bank against the CPU FAISS graph (≥ 99.9 % of
// neighbour sets, ties aside).
TEST(KnnGraph, CudaGraphMatchesCpuFaiss) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  auto bank = normalised(60000, 128, 9);
  auto f = KnnGraph::build(bank, 4);
  // Training may allow TF32 products (--precision tf32); the graph build still runs in float32
  // and leaves the setting as it found it.
  at::globalContext().setAllowTF32CuBLAS(true);
  auto g = KnnGraph::build(bank.to(at::kCUDA), 4);
  EXPECT_TRUE(at::globalContext().allowTF32CuBLAS());
  at::globalContext().setAllowTF32CuBLAS(false);
  EXPECT_GE(neighbour_set_agreement(f, g), 0.999);
}

// FAISS's GPU search (a CUDA build configured with INVP_FAISS_GPU_SOURCE) against the LibTorch
// GPU path on the same bank: the same neighbour sets (ties aside) and similarities, self
// excluded even among exact twins, k limited by FAISS's selection; and it is what build() uses.
TEST(KnnGraph, FaissGpuMatchesTensorOps) {
  EXPECT_THROW(KnnGraph::build_faiss_gpu(normalised(100, 8, 1), 4), invp::Error) << "a CPU bank";
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!KnnGraph::faiss_gpu_built()) GTEST_SKIP() << "this build has no FAISS GPU search";
  auto bank = normalised(20000, 64, 13).to(at::kCUDA);
  auto f = KnnGraph::build_faiss_gpu(bank, 4);
  auto t = KnnGraph::build_tensor_ops(bank, 4);
  expect_same_graph(f, t);
  // Most similar first, and each similarity is its edge's inner product.
  EXPECT_TRUE((f.similarities.narrow(1, 0, 3) >= f.similarities.narrow(1, 1, 3)).all().item<bool>());
  auto cpu = bank.cpu();
  auto dots = (cpu.unsqueeze(1) * cpu.index_select(0, f.neighbors.reshape(-1)).view({20000, 4, 64})).sum(2);
  EXPECT_TRUE(at::allclose(dots, f.similarities, 1e-5, 1e-5));
  auto b = KnnGraph::build(bank, 4);
  EXPECT_TRUE(at::equal(b.neighbors, f.neighbors)) << "build() takes FAISS GPU when it is built";
  expect_twins_found(bank, [](const at::Tensor& b) { return KnnGraph::build_faiss_gpu(b, 1); });
  EXPECT_THROW(KnnGraph::build_faiss_gpu(bank, 2048), invp::Error);
}
