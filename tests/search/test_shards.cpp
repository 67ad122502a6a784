// Sharded embedding (`invp embed --shard i/N`): the parts of a source, joined, equal an
// unsharded embed of it and build the same index; joining refuses overlapping parts and parts
// made by another model.
#include <invp/core/error.h>
#include <invp/search/embedder.h>
#include <invp/search/index_dir.h>
#include <invp/store/embedding_store.h>

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include "search_fixtures.h"

using namespace invp;
using invp_test::temp_dir;

TEST(Shards, RangesCoverTheSourceOnce) {
  for (int64_t n : {0, 1, 7, 100}) {
    int64_t next = 0;
    for (int i = 0; i < 3; ++i) {
      auto [b, e] = search::shard_range(n, i, 3);
      EXPECT_EQ(b, next);
      EXPECT_LE(e - b, n / 3 + 1);
      next = e;
    }
    EXPECT_EQ(next, n);
  }
  EXPECT_THROW(search::shard_range(10, 3, 3), Error);
  EXPECT_EQ(search::shard_path("out/emb.h5", 1, 4), "out/emb.part-1-of-4.h5");
  EXPECT_EQ(search::shard_path("emb-{shard}.h5", 0, 2), "emb-0-of-2.h5");
  EXPECT_EQ(search::shard_path("emb.h5", 0, 1), "emb.h5");
}

TEST(Shards, PartsJoinedEqualTheWholeAndBuildTheSameIndex) {
  auto dir = temp_dir("shards");
  auto src = invp_test::write_idx(dir, 103);
  auto model = invp_test::write_model(dir, 16, 1);
  search::Embedder e(model);
  search::EmbedOptions o;
  o.batch_size = 16;
  o.chunk_rows = 10;
  search::embed_to_file(e, src, (dir / "whole.h5").string(), o);
  std::vector<std::string> parts;
  for (int i : {2, 0, 1}) {  // any order
    o.shard = i, o.shards = 3;
    parts.push_back(search::shard_path((dir / "emb.h5").string(), i, 3));
    auto r = search::embed_to_file(e, src, parts.back(), o);
    auto [b, end] = search::shard_range(103, i, 3);
    EXPECT_EQ(r.rows, end - b);
    store::EmbeddingReader part(parts.back());
    EXPECT_EQ(part.meta().shard, std::to_string(i) + "/3");
    EXPECT_EQ(part.read(0, 1).ids[0], b);  // ids are positions in the whole source
  }
  auto joined = (dir / "joined.h5").string();
  store::join_parts(parts, joined);
  auto w = store::EmbeddingReader((dir / "whole.h5").string()).read_all();
  auto j = store::EmbeddingReader(joined).read_all();
  EXPECT_EQ(j.ids, w.ids);
  EXPECT_EQ(j.paths, w.paths);
  EXPECT_EQ(j.labels, w.labels);
  // Per-image arithmetic; batches are cut at other places, which BLAS may round differently.
  EXPECT_TRUE(torch::allclose(j.embeddings, w.embeddings, 0, 1e-6));
  EXPECT_EQ(store::EmbeddingReader(joined).meta().shard, "");

  search::BuildOptions b;
  b.recipe = "flat";
  search::build_index((dir / "whole.h5").string(), (dir / "iw").string(), b);
  search::build_index(parts, (dir / "ip").string(), b);
  search::IndexHandle hw((dir / "iw").string()), hp((dir / "ip").string());
  EXPECT_EQ(hp.info().size, 103);
  for (int64_t id : {0L, 34L, 35L, 68L, 69L, 102L}) {
    auto a = hw.search(hw.vectors({id}), 10, {id})[0], c = hp.search(hp.vectors({id}), 10, {id})[0];
    ASSERT_EQ(a.size(), c.size());
    for (size_t k = 0; k < a.size(); ++k) EXPECT_EQ(a[k].id, c[k].id) << "query " << id << " rank " << k;
  }
  fs::remove_all(dir);
}

TEST(Shards, JoinRefusesOverlapsAndAnotherModel) {
  auto dir = temp_dir("shards_bad");
  auto src = invp_test::write_idx(dir, 40);
  auto m1 = invp_test::write_model(dir, 16, 1), m2 = invp_test::write_model(dir, 16, 2);
  search::EmbedOptions o;
  o.batch_size = 16;
  search::Embedder e1(m1), e2(m2);
  o.shard = 0, o.shards = 2;
  search::embed_to_file(e1, src, (dir / "a0.h5").string(), o);
  search::embed_to_file(e1, src, (dir / "whole.h5").string(), search::EmbedOptions{});
  o.shard = 1;
  search::embed_to_file(e2, src, (dir / "b1.h5").string(), o);
  auto error = [&](std::vector<std::string> parts) {
    try {
      store::join_parts(parts, (dir / "j.h5").string());
    } catch (const Error& err) {
      return std::string(err.what());
    }
    return std::string();
  };
  EXPECT_NE(error({(dir / "a0.h5").string(), (dir / "whole.h5").string()}).find("overlap"), std::string::npos);
  EXPECT_NE(error({(dir / "a0.h5").string(), (dir / "b1.h5").string()}).find("another model"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "j.h5"));
  fs::remove_all(dir);
}

// A join holds one part open at a time: 48 parts join under a limit of 16 more open files than
// the test already has (merging many slices must not run out of descriptors, nor hold every
// part's HDF5 caches at once).
TEST(Shards, JoinHoldsOnePartOpenAtATime) {
  auto dir = temp_dir("shards_many");
  std::vector<std::string> parts;
  constexpr int kParts = 48;
  for (int i = kParts - 1; i >= 0; --i) {  // given last first: the join sorts by id
    store::Rows r;
    r.embeddings = torch::full({2, 4}, float(i));
    r.ids = {2 * i, 2 * i + 1};
    r.paths = {"a" + std::to_string(i), "b" + std::to_string(i)};
    r.labels = {i, i};
    store::StoreMeta m;
    m.dim = 4;
    m.model_hash = "m";
    parts.push_back((dir / ("p" + std::to_string(i) + ".h5")).string());
    store::write_store(parts.back(), m, r);
  }
  int64_t open_now = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator("/proc/self/fd")) ++open_now;
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = rlim_t(open_now + 16);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  std::string error;
  try {
    store::join_parts(parts, (dir / "joined.h5").string());
  } catch (const std::exception& e) {
    error = e.what();
  }
  setrlimit(RLIMIT_NOFILE, &old);
  ASSERT_EQ(error, "");
  auto j = store::EmbeddingReader((dir / "joined.h5").string()).read_all();
  ASSERT_EQ(j.size(), 2 * kParts);
  for (int64_t k = 0; k < j.size(); ++k) {
    EXPECT_EQ(j.ids[size_t(k)], k);
    EXPECT_EQ(j.embeddings[k][0].item<float>(), float(k / 2));
  }
  fs::remove_all(dir);
}
