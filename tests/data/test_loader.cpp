#include <gtest/gtest.h>

#include <set>
#include <vector>

#include <invp/core/error.h>
#include <invp/data/loader.h>

using namespace invp::data;

namespace {

// Synthetic dataset: every pixel of item i is i % 256 (R) / (i / 256) % 256 (G), label i % 10.
class FakeDataset : public Dataset {
 public:
  FakeDataset(size_t n, int channels, std::set<size_t> bad = {})
      : n_(n), c_(channels), bad_(std::move(bad)) {}
  size_t size() const override { return n_; }
  int channels() const override { return c_; }
  int32_t label(size_t i) const override { return int32_t(i % 10); }
  std::string kind() const override { return "fake"; }
  bool get_bad(size_t i) const { return bad_.count(i) > 0; }
  Sample get(size_t i) const override {
    if (bad_.count(i)) throw invp::Error("fake#" + std::to_string(i), "corrupt");
    Sample s;
    s.index = int64_t(i);
    s.label = label(i);
    s.image = Image{12, 10, c_, {}};
    s.image.pixels.resize(size_t(12 * 10 * c_));
    for (size_t p = 0; p < s.image.pixels.size(); p += size_t(c_)) {
      s.image.pixels[p] = uint8_t(i % 256);
      if (c_ == 3) {
        s.image.pixels[p + 1] = uint8_t((i / 256) % 256);
        s.image.pixels[p + 2] = uint8_t(p % 256);  // texture, so crops differ
      }
    }
    return s;
  }

 private:
  size_t n_;
  int c_;
  std::set<size_t> bad_;
};

LoaderOptions opts(int bs, int workers) {
  LoaderOptions o;
  o.batch_size = bs;
  o.workers = workers;
  o.seed = 123;
  o.augment = small_image_preset(16, 3);
  return o;
}

std::vector<Batch> epoch(Loader& l, int e) {
  l.start_epoch(e);
  std::vector<Batch> out;
  while (auto b = l.next()) out.push_back(std::move(*b));
  return out;
}

std::vector<int64_t> order_of(const std::vector<Batch>& bs) {
  std::vector<int64_t> v;
  for (const auto& b : bs) {
    auto a = b.indices.accessor<int64_t, 1>();
    for (int64_t k = 0; k < a.size(0); ++k) v.push_back(a[k]);
  }
  return v;
}

}  // namespace

TEST(Loader, EveryIndexOncePerEpoch) {
  auto ds = std::make_shared<FakeDataset>(103, 3);
  for (int workers : {1, 2, 4}) {
    Loader l(ds, opts(10, workers));
    EXPECT_EQ(l.batches_per_epoch(), 11u);
    auto bs = epoch(l, 1);
    ASSERT_EQ(bs.size(), 11u);
    EXPECT_EQ(bs.back().images.size(0), 3);
    auto v = order_of(bs);
    ASSERT_EQ(v.size(), 103u);
    EXPECT_EQ(std::set<int64_t>(v.begin(), v.end()).size(), 103u) << workers;
    for (const auto& b : bs) {
      EXPECT_EQ(b.images.dim(), 4);
      EXPECT_EQ(b.images.size(1), 3);
      EXPECT_EQ(b.images.size(2), 16);
      EXPECT_EQ(b.images.size(3), 16);
      EXPECT_EQ(b.images.scalar_type(), torch::kFloat32);
      EXPECT_TRUE(torch::equal(b.labels, b.indices % 10));
    }
  }
}

TEST(Loader, DropLast) {
  auto ds = std::make_shared<FakeDataset>(103, 1);
  auto o = opts(10, 2);
  o.augment = small_image_preset(8, 1);
  o.drop_last = true;
  Loader l(ds, o);
  EXPECT_EQ(l.batches_per_epoch(), 10u);
  auto bs = epoch(l, 1);
  ASSERT_EQ(bs.size(), 10u);
  auto v = order_of(bs);
  EXPECT_EQ(v.size(), 100u);
  EXPECT_EQ(std::set<int64_t>(v.begin(), v.end()).size(), 100u);
  EXPECT_EQ(bs[0].images.size(1), 1);
}

TEST(Loader, OrderChangesAcrossEpochsAndNoShuffleIsSequential) {
  auto ds = std::make_shared<FakeDataset>(64, 3);
  Loader l(ds, opts(16, 2));
  auto e1 = order_of(epoch(l, 1)), e2 = order_of(epoch(l, 2)), e1b = order_of(epoch(l, 1));
  EXPECT_NE(e1, e2);
  EXPECT_EQ(e1, e1b);
  auto o = opts(16, 2);
  o.shuffle = false;
  Loader seq(ds, o);
  auto v = order_of(epoch(seq, 1));
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], int64_t(i));
}

TEST(Loader, SameBatchesForAnyWorkerCount) {
  auto ds = std::make_shared<FakeDataset>(50, 3);
  Loader a(ds, opts(8, 1)), b(ds, opts(8, 3));
  for (int e : {1, 2}) {
    auto ba = epoch(a, e), bb = epoch(b, e);
    ASSERT_EQ(ba.size(), bb.size());
    for (size_t k = 0; k < ba.size(); ++k) {
      EXPECT_TRUE(torch::equal(ba[k].indices, bb[k].indices));
      EXPECT_TRUE(torch::equal(ba[k].images, bb[k].images)) << "epoch " << e << " batch " << k;
    }
  }
  auto o = opts(8, 1);
  o.seed = 124;
  Loader c(ds, o);
  EXPECT_FALSE(torch::equal(epoch(c, 1)[0].images, epoch(a, 1)[0].images));
}

TEST(Loader, BadItemsSkippedAndCounted) {
  auto ds = std::make_shared<FakeDataset>(40, 3, std::set<size_t>{3, 17, 18, 39});
  Loader l(ds, opts(8, 2));
  auto v = order_of(epoch(l, 1));
  EXPECT_EQ(v.size(), 36u);
  EXPECT_EQ(l.bad_count(), 4u);
  for (int64_t i : v) EXPECT_TRUE(i != 3 && i != 17 && i != 18 && i != 39);
}

TEST(Loader, StrictRethrowsOnConsumer) {
  auto ds = std::make_shared<FakeDataset>(40, 3, std::set<size_t>{5});
  auto o = opts(8, 2);
  o.strict = true;
  o.shuffle = false;
  Loader l(ds, o);
  l.start_epoch(1);
  EXPECT_THROW(
      {
        while (l.next()) {
        }
      },
      invp::Error);
}

TEST(Loader, DestructorMidEpochAndRestart) {
  auto ds = std::make_shared<FakeDataset>(500, 3);
  auto o = opts(4, 3);
  o.queue_batches = 2;
  {
    Loader l(ds, o);
    l.start_epoch(1);
    ASSERT_TRUE(l.next().has_value());
    l.start_epoch(2);  // abandons epoch 1 with workers blocked on the full queue
    ASSERT_TRUE(l.next().has_value());
  }  // destroyed mid-epoch: must not hang
  Loader idle(ds, o);
  EXPECT_FALSE(idle.next().has_value());  // no epoch started
}

// Resuming inside an epoch: start_epoch(e, b) yields exactly batches b, b+1, ... of an
// uninterrupted epoch e (same items, same augmentation), and position() counts from b.
TEST(Loader, StartInsideAnEpochGivesTheRemainingBatches) {
  auto ds = std::make_shared<FakeDataset>(70, 3);
  Loader full(ds, opts(8, 2)), resumed(ds, opts(8, 3));
  auto all = epoch(full, 2);
  resumed.start_epoch(2, 5);
  EXPECT_EQ(resumed.position(), 5u);
  size_t k = 5;
  while (auto b = resumed.next()) {
    ASSERT_LT(k, all.size());
    EXPECT_TRUE(torch::equal(b->indices, all[k].indices)) << "batch " << k;
    EXPECT_TRUE(torch::equal(b->images, all[k].images)) << "batch " << k;
    EXPECT_EQ(resumed.position(), ++k);
  }
  EXPECT_EQ(k, all.size());
  resumed.start_epoch(2, 1000);  // past the end: an empty epoch
  EXPECT_FALSE(resumed.next().has_value());
}

// Data-parallel shards: share r of global batch b is rows [r·B, (r+1)·B) of the single loader's
// batch b of size B·shards (same order, same augmentation), for every shard count.
TEST(Loader, ShardsSplitEachGlobalBatch) {
  auto ds = std::make_shared<FakeDataset>(53, 3);
  for (int shards : {2, 3}) {
    auto whole_opts = opts(4 * shards, 1);
    whole_opts.drop_last = true;
    Loader whole(ds, whole_opts);
    auto full = epoch(whole, 2);
    std::vector<std::vector<Batch>> parts;
    for (int r = 0; r < shards; ++r) {
      auto o = opts(4, 2);
      o.drop_last = true;
      o.shard = r, o.shards = shards;
      Loader l(ds, o);
      EXPECT_EQ(l.batches_per_epoch(), whole.batches_per_epoch());
      parts.push_back(epoch(l, 2));
      ASSERT_EQ(parts.back().size(), full.size());
    }
    for (size_t b = 0; b < full.size(); ++b)
      for (int r = 0; r < shards; ++r) {
        EXPECT_TRUE(torch::equal(parts[size_t(r)][b].indices, full[b].indices.slice(0, 4 * r, 4 * r + 4)));
        EXPECT_TRUE(torch::equal(parts[size_t(r)][b].images, full[b].images.slice(0, 4 * r, 4 * r + 4)));
      }
  }
  auto bad = opts(4, 1);
  bad.shard = 2, bad.shards = 2;
  EXPECT_THROW(Loader(ds, bad), invp::Error);
}

// A data-parallel share keeps its size whatever is unreadable (the ranks' collectives need
// equal shapes): bad items' slots are filled from the same share; an all-bad share is an error.
TEST(Loader, ShardsKeepTheirSizeOverBadItems) {
  auto ds = std::make_shared<FakeDataset>(40, 3, std::set<size_t>{1, 2, 3, 5, 8, 13, 21, 34});
  auto o = opts(4, 2);
  o.drop_last = true;
  o.shard = 1, o.shards = 2;
  Loader l(ds, o);
  for (const auto& b : epoch(l, 1)) {
    EXPECT_EQ(b.indices.size(0), 4);
    auto a = b.indices.accessor<int64_t, 1>();
    for (int64_t k = 0; k < 4; ++k) EXPECT_EQ(ds->get_bad(size_t(a[k])), false);
  }
  auto all_bad = std::make_shared<FakeDataset>(8, 3, std::set<size_t>{0, 1, 2, 3, 4, 5, 6, 7});
  Loader bad(all_bad, o);
  bad.start_epoch(1);
  EXPECT_THROW(bad.next(), invp::Error);
}
