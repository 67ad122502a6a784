// Filtered search, removal and compaction, labels from a CSV: every result compared with brute
// force over the admitted (or remaining) items.
#include "search_fixtures.h"

#include <invp/core/error.h>
#include <invp/search/dedup.h>
#include <invp/search/filter.h>
#include <invp/search/index_dir.h>
#include <invp/search/index_edit.h>
#include <invp/store/embedding_store.h>

#include <gtest/gtest.h>

#include <fstream>
#include <set>

namespace {
using namespace invp;
using invp_test::temp_dir;

constexpr int64_t kN = 4000, kDim = 16;
const std::vector<std::string> kCategories{"Coat", "Shirt", "Bag", "Boot"};

store::Rows clustered(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  auto centers = torch::randn({40, kDim});
  auto pick = torch::randint(0, 40, {n}, torch::kLong);
  auto x = centers.index_select(0, pick) + 0.35 * torch::randn({n, kDim});
  store::Rows r;
  r.embeddings = (x / x.norm(2, 1, true)).contiguous();
  for (int64_t i = 0; i < n; ++i) {
    r.ids.push_back(i);
    r.paths.push_back("/data/" + std::string(i % 2 ? "2024" : "2023") + "/img" + std::to_string(i) + ".png");
    r.labels.push_back(i % 5 == 4 ? -1 : int32_t(pick[i].item<int64_t>() % 4));
  }
  return r;
}

struct Collection {
  fs::path dir;
  store::Rows all;
  std::string h5;
};
Collection make(const std::string& name) {
  Collection c{temp_dir(name), clustered(kN, 11), ""};
  store::StoreMeta m;
  m.dim = kDim;
  m.model_hash = "model-a";
  m.categories = kCategories;
  c.h5 = (c.dir / "e.h5").string();
  store::write_store(c.h5, m, c.all);
  return c;
}
std::string build(const Collection& c, const std::string& recipe) {
  search::BuildOptions o;
  o.recipe = recipe;
  o.tune_queries = 200;
  o.target_recall = 0.9;
  const auto dir = (c.dir / recipe).string();
  search::build_index(c.h5, dir, o);
  return dir;
}

// Brute force over the rows whose ids ALLOWED admits: the oracle.
std::vector<int64_t> oracle(const store::Rows& all, const index::IdSet& allowed, const torch::Tensor& q, int k) {
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < all.size(); ++i)
    if (allowed.contains(all.ids[size_t(i)])) rows.push_back(i);
  auto base = all.embeddings.index_select(0, torch::tensor(rows, torch::kLong));
  const int64_t kk = std::min<int64_t>(k, int64_t(rows.size()));
  auto top = std::get<1>(torch::matmul(base, q).topk(kk));
  std::vector<int64_t> v;
  for (int64_t j = 0; j < kk; ++j) v.push_back(all.ids[size_t(rows[size_t(top[j].item<int64_t>())])]);
  return v;
}

// Mean recall@k of the index's answers (restricted to ALLOWED when given) for Q queries.
double recall(search::IndexHandle& h, const store::Rows& all, const index::IdSet& allowed, bool filtered, int q, int k) {
  double sum = 0;
  for (int i = 0; i < q; ++i) {
    auto query = all.embeddings[(i * 37) % kN].unsqueeze(0).contiguous();
    auto got = h.search_ids(query, k, filtered ? &allowed : nullptr).indices[0];
    auto want = oracle(all, allowed, query[0], k);
    std::set<int64_t> w(want.begin(), want.end());
    int hit = 0;
    for (int64_t j = 0; j < k; ++j) hit += w.count(got[j].item<int64_t>());
    sum += double(hit) / double(want.size());
  }
  return sum / q;
}

index::IdSet every(int64_t n) {
  index::IdSet s(n);
  for (int64_t i = 0; i < n; ++i) s.insert(i);
  return s;
}
// Every STRIDE-th id: a filter that admits 1/STRIDE of the items, spread over all clusters.
index::IdSet strided(int64_t n, int64_t stride) {
  index::IdSet s(n);
  for (int64_t i = 0; i < n; i += stride) s.insert(i);
  return s;
}

TEST(Filter, ParsesTheGrammarAndRefusesMistakesNamingTheTerm) {
  auto f = search::Filter::parse("category=Coat|Shirt, label!=3,id=100..200|7,path=2024/*");
  ASSERT_EQ(f.terms().size(), 4u);
  EXPECT_EQ(f.terms()[0].names, (std::vector<std::string>{"Coat", "Shirt"}));
  EXPECT_TRUE(f.terms()[1].negate);
  EXPECT_EQ(f.terms()[2].ranges.size(), 2u);
  EXPECT_TRUE(search::Filter::parse("  ").empty());
  for (const char* bad : {"colour=red", "id=5..2", "id=x", "label=", "category", "id=1,,id=2", "=3"}) {
    try {
      search::Filter::parse(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.file(), "--filter") << bad;
    }
  }
}

TEST(Filter, MatchesFieldsAlternativesNegationAndPathTails) {
  auto m = [](const std::string& text, int64_t id, int32_t label, const std::string& path) {
    return search::Filter::parse(text).matches(id, label, path, kCategories);
  };
  EXPECT_TRUE(m("category=Coat|Bag", 1, 2, "a"));
  EXPECT_FALSE(m("category=Coat|Bag", 1, 1, "a"));
  EXPECT_FALSE(m("category=Coat", 1, -1, "a"));  // unlabelled: no category
  EXPECT_TRUE(m("label!=1", 1, -1, "a"));
  EXPECT_TRUE(m("id=100..200", 150, 0, "a"));
  EXPECT_FALSE(m("id=100..200", 201, 0, "a"));
  EXPECT_TRUE(m("path=2024/*", 1, 0, "/data/2024/img1.png"));
  EXPECT_TRUE(m("path=*.png", 1, 0, "/data/2024/img1.png"));
  EXPECT_FALSE(m("path=2024/*", 1, 0, "/data/x2024/img1.png"));
  EXPECT_FALSE(m("path=/2024/*", 1, 0, "/data/2024/img1.png"));  // anchored: whole path only
  EXPECT_TRUE(m("category=Shirt,id=0..9", 3, 1, "a"));
  EXPECT_FALSE(m("category=Shirt,id=0..9", 30, 1, "a"));
}

TEST(Filter, FlatAndFullProbeIvfEqualBruteForceOverTheSubset) {
  auto c = make("filter-exact");
  for (const std::string recipe : {"flat", "ivf-flat"}) {
    search::IndexHandle h(build(c, recipe));
    if (recipe == "ivf-flat") h.set_search_params({{"nprobe", 1 << 12}});
    for (const std::string text : {"category=Coat|Boot", "path=2024/*,label!=2", "id=0..39"}) {
      const auto& allowed = h.allowed(search::Filter::parse(text));
      ASSERT_GT(allowed.count(), 0) << text;
      for (int i = 0; i < 30; ++i) {
        auto q = c.all.embeddings[i * 101].unsqueeze(0).contiguous();
        index::FilterStats st;
        auto got = h.search_ids(q, 10, &allowed, &st).indices[0];
        // Flat over-fetches an exact search where most items are admitted; IVF never does.
        EXPECT_TRUE(st.in_faiss || st.exact || (recipe == "flat" && st.fetched > 0)) << recipe << " " << text;
        auto want = oracle(c.all, allowed, q[0], 10);
        for (size_t j = 0; j < want.size(); ++j) ASSERT_EQ(got[int64_t(j)].item<int64_t>(), want[j]) << recipe << " " << text;
      }
    }
    // Fewer matches than k: every match, then padding, and the search says it ran out.
    index::IdSet three(kN);
    for (int64_t id : {5, 900, 3001}) three.insert(id);
    index::FilterStats st;
    auto r = h.search_ids(c.all.embeddings[0].unsqueeze(0).contiguous(), 10, &three, &st).indices[0];
    std::set<int64_t> got(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + 3);
    EXPECT_EQ(got, (std::set<int64_t>{5, 900, 3001})) << recipe;
    EXPECT_EQ(r[3].item<int64_t>(), -1);
    EXPECT_TRUE(st.exhausted);
  }
  fs::remove_all(c.dir);
}

TEST(Filter, ApproximateRecipesKeepTheirRecallForSelectiveFilters) {
  auto c = make("filter-approx");
  for (const std::string recipe : {"hnsw", "ivf-flat", "ivf-pq"}) {
    search::IndexHandle h(build(c, recipe));
    const double base = recall(h, c.all, every(kN), false, 100, 10);
    for (int64_t stride : {10, 100}) {  // 10 % and 1 % of the items
      const double got = recall(h, c.all, strided(kN, stride), true, 100, 10);
      EXPECT_GE(got, base - 0.02) << recipe << " at 1/" << stride << " (unfiltered " << base << ")";
    }
    // A filter over a whole category (clustered, not spread) too.
    const auto& coats = h.allowed(search::Filter::parse("category=Coat"));
    EXPECT_GE(recall(h, c.all, coats, true, 100, 10), base - 0.02) << recipe;
  }
  fs::remove_all(c.dir);
}

TEST(Filter, UnknownCategoryIsRefusedListingTheKnownOnes) {
  auto c = make("filter-cat");
  search::IndexHandle h(build(c, "flat"));
  try {
    h.allowed(search::Filter::parse("category=Hat"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), "--filter");
    EXPECT_NE(std::string(e.what()).find("Coat"), std::string::npos) << e.what();
  }
  fs::remove_all(c.dir);
}

// Removed items never come back, from any recipe, before and after compaction; ids stay;
// adds continue after the largest id ever given.
TEST(Remove, RemovedItemsNeverComeBackAndAddsContinueTheIds) {
  auto c = make("remove");
  std::vector<int64_t> gone;
  for (int64_t i = 0; i < kN; i += 7) gone.push_back(i);
  index::IdSet rest(kN);
  for (int64_t i = 0; i < kN; ++i)
    if (i % 7) rest.insert(i);
  auto q = c.all.embeddings.slice(0, 0, 300).contiguous();
  for (const std::string recipe : {"flat", "ivf-flat", "hnsw", "ivf-pq"}) {
    const auto dir = build(c, recipe);
    const int gen = search::read_index_info(dir).generation;
    double before = 0;
    {
      search::IndexHandle h(dir);
      before = recall(h, c.all, every(kN), false, 50, 10);
    }
    auto r = search::remove_from_index(dir, {gone.begin(), gone.end()});
    EXPECT_EQ(r.removed, int64_t(gone.size()));
    EXPECT_EQ(r.size, kN - int64_t(gone.size()));
    EXPECT_EQ(r.in_place, recipe != "hnsw") << recipe;
    EXPECT_EQ(r.generation, gen + 1);
    auto again = search::remove_from_index(dir, {0, 7});  // already gone: nothing happens
    EXPECT_EQ(again.removed, 0);
    EXPECT_EQ(again.missing, 2);
    EXPECT_EQ(again.generation, gen + 1);
    auto check = [&](const char* when) {
      search::IndexHandle h(dir);
      auto found = h.search_ids(q, 20).indices;
      for (int64_t j = 0; j < found.numel(); ++j) {
        const int64_t id = found.data_ptr<int64_t>()[j];
        ASSERT_TRUE(id < 0 || id % 7) << recipe << " " << when << ": removed id " << id << " came back";
      }
      EXPECT_GE(recall(h, c.all, rest, false, 50, 10), before - 0.05) << recipe << " " << when;
      EXPECT_EQ(h.row_of(14), -1);
      EXPECT_EQ(h.describe(15, 0).path, c.all.paths[15]);  // the others keep their ids
    };
    check("after remove");
    auto cr = search::compact_index(dir);
    EXPECT_EQ(cr.dropped, recipe == "hnsw" ? int64_t(gone.size()) : 0) << recipe;
    EXPECT_EQ(search::read_index_info(dir).tombstones, 0);
    check("after compact");
    store::Rows more;
    more.embeddings = c.all.embeddings.slice(0, 0, 3).contiguous();
    more.ids = {0, 1, 2};
    more.paths = {"new0", "new1", "new2"};
    more.labels = {0, 1, 2};
    auto a = search::add_to_index(dir, more, "model-a");
    EXPECT_EQ(a.first_id, kN) << recipe;  // not the freed ids
    EXPECT_EQ(a.size, kN - int64_t(gone.size()) + 3);
    search::IndexHandle h(dir);
    EXPECT_EQ(h.search_ids(c.all.embeddings[0].unsqueeze(0).contiguous(), 1).indices[0][0].item<int64_t>(), kN) << recipe;
  }
  fs::remove_all(c.dir);
}

// A dedup report removed: the duplicates go, the representatives stay, and dedup then finds
// nothing, through tombstones (HNSW) as through removal in place (Flat).
TEST(Remove, DedupReportRemovesTheDuplicatesAndDedupFindsNoneAfter) {
  auto c = make("remove-dups");
  for (int64_t i = 0; i < 30; ++i) c.all.embeddings[i * 50 + 1].copy_(c.all.embeddings[i * 50]);  // 30 exact copies
  store::StoreMeta m;
  m.dim = kDim;
  m.model_hash = "model-a";
  m.categories = kCategories;
  store::write_store(c.h5, m, c.all);
  for (const std::string recipe : {"flat", "hnsw"}) {
    const auto dir = build(c, recipe);
    search::DedupOptions o;
    o.threshold = 0.9999;
    std::vector<int64_t> dups;
    {
      search::IndexHandle h(dir);
      auto groups = search::group_duplicates(h, search::duplicate_pairs(h, o));
      // Flat finds every copy; HNSW may miss one (dedup.h: what the index never proposes).
      ASSERT_GE(groups.size(), recipe == "flat" ? 30u : 25u) << recipe;
      for (const auto& g : groups)
        for (const auto& item : g.items)
          if (item.id != g.representative) dups.push_back(item.id);
    }
    auto r = search::remove_from_index(dir, dups);
    EXPECT_EQ(r.removed, int64_t(dups.size())) << recipe;
    search::IndexHandle h(dir);
    EXPECT_TRUE(search::duplicate_pairs(h, o).empty()) << recipe;
  }
  fs::remove_all(c.dir);
}

TEST(Remove, FilterAndReportsNameTheIds) {
  auto c = make("remove-lists");
  const auto ids = (c.dir / "ids.txt").string(), report = (c.dir / "dups.json").string();
  std::ofstream(ids) << "# to go\n3, 5 8\n13\n";
  EXPECT_EQ(search::read_id_list(ids), (std::vector<int64_t>{3, 5, 8, 13}));
  std::ofstream(ids) << "3\n4x\n";
  EXPECT_THROW(search::read_id_list(ids), Error);
  std::ofstream(report) << R"({"threshold":0.9,"groups":[{"representative":4,"items":[{"id":4},{"id":9},{"id":2}]},)"
                        << R"({"representative":7,"items":[{"id":7},{"id":1}]}]})";
  EXPECT_EQ(search::dedup_report_duplicates(report), (std::vector<int64_t>{9, 2, 1}));
  std::ofstream(report) << "[]";
  EXPECT_THROW(search::dedup_report_duplicates(report), Error);
  fs::remove_all(c.dir);
}

TEST(Labels, CsvLabelsNewItemsByPathOrTailAndExtendsTheCategories) {
  auto c = make("labels");
  const auto csv = (c.dir / "labels.csv").string();
  std::ofstream(csv) << "path,label\nimg/a.png,Shirt\n/abs/b.png,Hat\nc.png,2\n";
  store::Rows rows;
  rows.paths = {"/home/me/img/a.png", "/abs/b.png", "/x/c.png", "/x/d.png"};
  rows.labels = {-1, -1, -1, -1};
  rows.ids = {0, 1, 2, 3};
  auto cats = kCategories;
  EXPECT_EQ(search::apply_label_csv(csv, rows, cats), 3);
  EXPECT_EQ(rows.labels, (std::vector<int32_t>{1, 4, 2, -1}));
  EXPECT_EQ(cats.back(), "Hat");
  std::ofstream(csv) << "a.png\n";
  try {
    search::apply_label_csv(csv, rows, cats);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("labels.csv:1"), std::string::npos) << e.what();
  }
  // Through index add: the new items carry the label and the index the new category.
  const auto dir = build(c, "flat");
  store::Rows more;
  more.embeddings = c.all.embeddings.slice(0, 0, 2).contiguous();
  more.ids = {0, 1};
  more.paths = {"/new/b.png", "/new/z.png"};
  more.labels = {-1, -1};
  std::ofstream(csv) << "b.png,Sandal\n";
  auto cat2 = kCategories;
  search::apply_label_csv(csv, more, cat2);
  search::add_to_index(dir, more, "model-a", cat2);
  search::IndexHandle h(dir);
  EXPECT_EQ(h.describe(kN, 0).category, "Sandal");
  EXPECT_EQ(h.describe(kN + 1, 0).label, -1);
  EXPECT_EQ(h.allowed(search::Filter::parse("category=Sandal")).count(), 1);
  fs::remove_all(c.dir);
}

}  // namespace
