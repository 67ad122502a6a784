// The query service (search/query_service.h) against IndexHandle as its oracle: images and
// ids, inline and from concurrent threads (micro-batched), every problem as a typed fault,
// the switch to a new generation after `index add`, and the `query --serve` line loop.
#include <invp/core/error.h>
#include <invp/data/montage.h>
#include <invp/data/dataset.h>
#include <invp/model/model_io.h>
#include <invp/search/embedder.h>
#include <invp/search/index_dir.h>
#include <invp/search/query_service.h>
#include <invp/store/embedding_store.h>

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "search_fixtures.h"

namespace fs = std::filesystem;
using namespace invp;

namespace {

struct Fixture {
  fs::path dir;
  std::string src, idx;
  std::shared_ptr<data::Dataset> ds;
  explicit Fixture(const std::string& name) : dir(invp_test::temp_dir("qs_" + name)) {
    src = invp_test::write_idx(dir, 96, 3);
    search::Embedder e(invp_test::write_model(dir, 16, 5));
    auto h5 = (dir / "e.h5").string();
    search::embed_to_file(e, src, h5, {});
    idx = (dir / "idx").string();
    search::build_index(h5, idx, {});
    ds = data::open_dataset(src);
  }
  ~Fixture() { fs::remove_all(dir); }
  std::vector<uint8_t> png(int64_t i) const { return data::encode_png(ds->get(i).image); }
};

void expect_same(const std::vector<search::Hit>& a, const std::vector<search::Hit>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t j = 0; j < a.size(); ++j) {
    EXPECT_EQ(a[j].id, b[j].id);
    EXPECT_NEAR(a[j].score, b[j].score, 1e-5);
    EXPECT_EQ(a[j].path, b[j].path);
    EXPECT_EQ(a[j].category, b[j].category);
  }
}

search::QueryRequest by_id(int64_t id, int k = 5) {
  search::QueryRequest r;
  r.name = "id " + std::to_string(id);
  r.id = id;
  r.k = k;
  return r;
}
search::QueryRequest by_image(std::vector<uint8_t> bytes, int k = 5) {
  search::QueryRequest r;
  r.name = "upload";
  r.image = std::move(bytes);
  r.k = k;
  return r;
}
}  // namespace

TEST(QueryService, AnswersLikeTheIndexAndTypesEveryProblem) {
  Fixture f("inline");
  search::IndexHandle oracle(f.idx);
  search::QueryService svc(f.idx);
  // An item's own pixels (through PNG) find it first; hits equal the handle's own search.
  auto r = svc.query(by_image(f.png(17)));
  ASSERT_EQ(r.fault, search::Fault::none) << r.error;
  EXPECT_EQ(r.hits[0].id, 17);
  expect_same(r.hits, oracle.search(oracle.embedder().embed_images({f.ds->get(17).image}), 5)[0]);
  // By id: the item is left out of its own hits.
  auto i = svc.query(by_id(9, 4));
  ASSERT_EQ(i.fault, search::Fault::none);
  expect_same(i.hits, oracle.search(oracle.vectors({9}), 4, {9})[0]);
  // Several at once, in order, each its own k; a bad one does not spoil the others.
  std::vector<search::QueryRequest> many{by_id(3, 2), by_image({1, 2, 3}), by_id(100000), by_image(f.png(40), 7),
                                         by_id(5, 0)};
  auto out = svc.query_many(many);
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[0].hits.size(), 2u);
  EXPECT_EQ(out[1].fault, search::Fault::unprocessable);
  EXPECT_EQ(out[2].fault, search::Fault::not_found);
  EXPECT_NE(out[2].error.find("100000"), std::string::npos);
  EXPECT_EQ(out[3].hits.size(), 7u);
  EXPECT_EQ(out[3].hits[0].id, 40);
  EXPECT_EQ(out[4].fault, search::Fault::bad_request);
  // A truncated PNG is refused, not half-decoded.
  auto cut = f.png(1);
  cut.resize(cut.size() / 2);
  EXPECT_EQ(svc.query(by_image(cut)).fault, search::Fault::unprocessable);
  // Categories and propagation, by id and by image.
  auto cats = svc.categories(by_id(2), 10);
  ASSERT_FALSE(cats.empty());
  EXPECT_EQ(cats[0].label, 2);
  auto prop = svc.propagation(by_image(f.png(6)), 3, 2);
  EXPECT_EQ(prop.anchor.id, 6);
  EXPECT_EQ(prop.hops.size(), 2u);
  EXPECT_EQ(svc.item_image(6).pixels, f.ds->get(6).image.pixels);
  try {
    svc.item_image(5000);
    ADD_FAILURE() << "an unknown id must throw";
  } catch (const search::QueryError& e) {
    EXPECT_EQ(e.fault(), search::Fault::not_found);
  }
  EXPECT_EQ(svc.info()["size"], 96);
}

TEST(QueryService, PixelCapRefusesLargeImages) {
  Fixture f("cap");
  search::ServiceOptions o;
  o.max_pixels = 100;  // the 16×16 items are over it
  search::QueryService svc(f.idx, o);
  auto r = svc.query(by_image(f.png(0)));
  EXPECT_EQ(r.fault, search::Fault::too_large);
  EXPECT_EQ(svc.query(by_id(0)).fault, search::Fault::none);
}

TEST(QueryService, ConcurrentCallersShareBatchesAndGetTheirOwnAnswers) {
  Fixture f("threads");
  search::QueryService inline_svc(f.idx);
  search::ServiceOptions o;
  o.background = true;
  search::QueryService svc(f.idx, o);
  const int threads = 8, each = 6;
  std::vector<std::vector<search::QueryResult>> got(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int j = 0; j < each; ++j) {
        const int64_t item = (t * each + j) % 96;
        got[size_t(t)].push_back(j % 2 ? svc.query(by_id(item)) : svc.query(by_image(f.png(item))));
      }
    });
  for (auto& th : pool) th.join();
  for (int t = 0; t < threads; ++t)
    for (int j = 0; j < each; ++j) {
      const int64_t item = (t * each + j) % 96;
      auto want = j % 2 ? inline_svc.query(by_id(item)) : inline_svc.query(by_image(f.png(item)));
      ASSERT_EQ(got[size_t(t)][size_t(j)].fault, search::Fault::none) << got[size_t(t)][size_t(j)].error;
      expect_same(got[size_t(t)][size_t(j)].hits, want.hits);
    }
  EXPECT_LE(svc.batches(), threads * each);
  EXPECT_EQ(svc.queue_depth(), 0u);
}

TEST(QueryService, SwitchesToANewGenerationBetweenRequests) {
  Fixture f("reload");
  search::ServiceOptions o;
  o.background = true;
  o.reload_seconds = 0.05;
  search::QueryService svc(f.idx, o);
  EXPECT_EQ(svc.query(by_id(95)).fault, search::Fault::none);
  EXPECT_EQ(svc.query(by_id(96)).fault, search::Fault::not_found);
  store::EmbeddingReader rd((f.dir / "e.h5").string());
  auto extra = rd.read(0, 2);
  search::add_to_index(f.idx, extra, search::read_index_info(f.idx).model_hash);
  // Within a bounded time (checks are 50 ms apart) the new items are found, and nothing
  // failed on the way.
  bool found = false;
  for (int i = 0; i < 100 && !found; ++i) {
    auto r = svc.query(by_id(96));
    ASSERT_TRUE(r.fault == search::Fault::none || r.fault == search::Fault::not_found) << r.error;
    found = r.fault == search::Fault::none;
    if (!found) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(svc.generation(), 2);
}

// An idle service (no request after the commit) still moves to the new generation: the
// server's /health must not report a stale one until traffic happens to arrive.
TEST(QueryService, IdleServiceNoticesANewGeneration) {
  Fixture f("idle-reload");
  search::ServiceOptions o;
  o.background = true;
  o.reload_seconds = 0.05;
  search::QueryService svc(f.idx, o);
  ASSERT_EQ(svc.generation(), 1);
  store::EmbeddingReader rd((f.dir / "e.h5").string());
  search::add_to_index(f.idx, rd.read(0, 2), search::read_index_info(f.idx).model_hash);
  for (int i = 0; i < 200 && svc.generation() == 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(svc.generation(), 2);
  EXPECT_EQ(svc.query(by_id(96)).fault, search::Fault::none);
}

TEST(QueryService, ServeLinesAnswersEachLineInOrder) {
  Fixture f("lines");
  auto img = (f.dir / "q.png").string();
  data::write_image_png(f.ds->get(12).image, img);
  int in[2];
  ASSERT_EQ(::pipe(in), 0);
  const std::string lines = img + "\r\nid:4\n\nid:99999\nid:x\n" + (f.dir / "nope.png").string() + "\n";
  ASSERT_EQ(::write(in[1], lines.data(), lines.size()), ssize_t(lines.size()));
  ::close(in[1]);
  std::FILE* out = std::tmpfile();
  search::QueryService svc(f.idx);
  auto rep = search::serve_lines(svc, in[0], out, 3);
  ::close(in[0]);
  EXPECT_EQ(rep.answered, 5);
  EXPECT_EQ(rep.failed, 3);
  std::rewind(out);
  std::vector<nlohmann::json> got;
  char buf[1 << 14];
  while (std::fgets(buf, sizeof buf, out)) got.push_back(nlohmann::json::parse(buf));
  std::fclose(out);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[0]["query"], img);
  EXPECT_EQ(got[0]["hits"][0]["id"], 12);
  EXPECT_EQ(got[0]["hits"].size(), 3u);
  EXPECT_EQ(got[1]["hits"].size(), 3u);
  EXPECT_NE(got[2]["error"].get<std::string>().find("99999"), std::string::npos);
  EXPECT_TRUE(got[3].contains("error"));
  EXPECT_NE(got[4]["error"].get<std::string>().find("nope.png"), std::string::npos);
}
