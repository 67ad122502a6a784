// The search stage end to end on small synthetic collections: embedding files (stream =
// in memory, resume after a kill equals an uninterrupted run), index directories (exact
// results against brute force, add without rebuild, generations and leftovers, integrity
// checks, model checks) and inspection (categories, purity, propagation).
#include <invp/core/cpu_features.h>
#include <invp/core/error.h>
#include <invp/core/hash.h>
#include <invp/index/exact_knn.h>
#include <invp/model/model_io.h>
#include <invp/search/embedder.h>
#include <invp/search/index_dir.h>
#include <invp/search/inspect.h>
#include <invp/store/embedding_store.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>

#include "formats_doc.h"
#include "search_fixtures.h"

namespace fs = std::filesystem;
using namespace invp;
using invp_test::temp_dir;
using invp_test::write_idx;
using invp_test::write_model;

namespace {

// Well-separated clusters: C centres, n points each, labelled by cluster.
store::Rows clustered(int64_t c, int64_t n, int64_t d, double noise, uint64_t seed) {
  torch::manual_seed(seed);
  auto centres = torch::nn::functional::normalize(torch::randn({c, d}), torch::nn::functional::NormalizeFuncOptions().dim(1));
  store::Rows r;
  auto x = centres.repeat_interleave(n, 0) + noise * torch::randn({c * n, d});
  r.embeddings = torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1)).contiguous();
  for (int64_t i = 0; i < c * n; ++i) {
    r.ids.push_back(i);
    r.labels.push_back(int32_t(i / n));
    r.paths.push_back("item " + std::to_string(i) + ".png");
  }
  return r;
}

std::string write_embeddings(const fs::path& dir, const store::Rows& rows, const std::string& hash = "h",
                             const std::string& precision = "fp32") {
  store::StoreMeta m;
  m.dim = rows.embeddings.size(1);
  m.model_hash = hash;
  m.precision = precision;
  m.categories = {"zero", "one", "two", "three", "four", "five"};
  auto p = (dir / "emb.h5").string();
  store::write_store(p, m, rows);
  return p;
}
}  // namespace

// The backbone output: the pooled features before the head, F wide, normalised; the head output
// is a different function of the same image.
TEST(Embed, BackboneOutputIsTheNormalisedPooledFeatures) {
  auto dir = temp_dir("backbone");
  auto model = write_model(dir, 16, 1);
  search::Embedder head(model), backbone(model, "cpu", search::Embedder::Output::backbone);
  model::ModelInfo info;
  auto net = model::load_model(model, &info);
  net->eval();
  EXPECT_EQ(head.dim(), 16);
  EXPECT_EQ(backbone.dim(), info.encoder.feature_width());
  torch::manual_seed(3);
  auto x = torch::randn({5, 1, 16, 16});
  auto f = backbone.embed(x);
  ASSERT_EQ(f.sizes(), (std::vector<int64_t>{5, backbone.dim()}));
  torch::NoGradGuard ng;
  auto expect = torch::nn::functional::normalize(net->features(x), torch::nn::functional::NormalizeFuncOptions().dim(1));
  EXPECT_TRUE(torch::allclose(f, expect, 1e-5, 1e-6));
  EXPECT_EQ(head.embed(x).size(1), 16);
}

// model.json's "embed" (train --embed-features) sets what an Embedder makes when not told; an
// explicit choice still wins, and a bad value is refused naming the file.
TEST(Embed, ModelJsonChoosesTheDefaultFeatures) {
  auto dir = temp_dir("embed_default");
  auto model = write_model(dir, 16, 1);
  EXPECT_EQ(search::Embedder(model).features(), "head");
  const auto json_path = model::json_path_for(model);
  std::ifstream in(json_path);
  auto info = model::info_from_json(std::string(std::istreambuf_iterator<char>(in), {}), json_path);
  EXPECT_EQ(info.features, "head");
  info.features = "backbone";
  {
    std::ofstream(json_path) << model::info_to_json(info);
  }
  search::Embedder as_trained(model), head(model, "cpu", search::Embedder::Output::head);
  EXPECT_EQ(as_trained.features(), "backbone");
  EXPECT_EQ(as_trained.dim(), info.encoder.feature_width());
  EXPECT_EQ(head.features(), "head");
  EXPECT_EQ(search::Embedder(model, "cpu", search::Embedder::output_of("auto")).features(), "backbone");
  info.features = "tail";
  {
    std::ofstream(json_path) << model::info_to_json(info);
  }
  try {
    search::Embedder bad(model);
    FAIL() << "a bad embed.features was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(json_path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("embed.features"), std::string::npos) << e.what();
  }
}

// --features backbone end to end: the file and the index record it, and an image query against
// the index is embedded as the backbone (a self-query finds itself at cosine 1).
TEST(Embed, BackboneFeaturesAreRecordedAndQueriedAlike) {
  auto dir = temp_dir("backbone_idx");
  auto model = write_model(dir, 16, 1);
  auto src = write_idx(dir, 40);
  search::Embedder backbone(model, "cpu", search::Embedder::Output::backbone), head(model);
  const auto out = (dir / "bb.h5").string(), hout = (dir / "head.h5").string();
  search::embed_to_file(backbone, src, out, {});
  search::embed_to_file(head, src, hout, {});
  store::EmbeddingReader r(out);
  EXPECT_EQ(r.meta().features, "backbone");
  EXPECT_EQ(r.dim(), backbone.dim());
  EXPECT_EQ(store::EmbeddingReader(hout).meta().features, "head");
  search::BuildOptions bo;
  bo.recipe = "flat";
  bo.model_pt = model;
  const auto idx = (dir / "idx").string();
  EXPECT_EQ(search::build_index(out, idx, bo).info.features, "backbone");
  search::IndexHandle h(idx);
  auto ds = data::open_dataset(src, {1, false});
  auto q = h.embedder().embed_images({ds->get(7).image});
  EXPECT_EQ(h.embedder().features(), "backbone");
  auto hits = h.search(q, 1)[0];
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].id, 7);
  EXPECT_NEAR(hits[0].score, 1.0, 1e-4);
  fs::remove_all(dir);
}

// --precision: bf16 rows follow fp32's within bf16's rounding, the file records the choice, and
// what cannot run is refused before any work.
TEST(Embed, PrecisionIsResolvedAppliedAndRecorded) {
  auto dir = temp_dir("precision");
  auto src = write_idx(dir, 64);
  auto model = write_model(dir, 16, 2);
  auto refused = [&](const std::string& device, const std::string& precision, const std::string& what) {
    try {
      search::Embedder e(model, device, search::Embedder::Output::head, precision);
      ADD_FAILURE() << device << " " << precision << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  refused("cpu", "fp16", "--precision must be auto, fp32 or bf16");
  refused("cuda", "bf16", "--device cpu");
  search::Embedder f32(model, "cpu", search::Embedder::Output::head, "fp32");
  EXPECT_EQ(f32.precision(), "fp32");
  const auto cpu = cpu_bf16();
  EXPECT_EQ(search::Embedder(model, "cpu", search::Embedder::Output::head, "auto").precision(),
            cpu == CpuBf16::Amx ? "bf16" : "fp32");
  if (cpu == CpuBf16::None) {
    refused("cpu", "bf16", "no bfloat16 instructions");
    fs::remove_all(dir);
    GTEST_SKIP() << "this CPU has no bfloat16 instructions";
  }
  search::Embedder b16(model, "cpu", search::Embedder::Output::head, "bf16");
  EXPECT_EQ(b16.precision(), "bf16");
  auto ds = data::open_dataset(src);
  auto a = search::embed_dataset_in_memory(f32, ds, 32).features;
  auto b = search::embed_dataset_in_memory(b16, ds, 32).features;
  EXPECT_EQ(b.scalar_type(), torch::kFloat);
  EXPECT_NEAR(b.norm(2, 1).mean().item<double>(), 1.0, 1e-5);
  auto cos = (a * b).sum(1);
  EXPECT_GT(cos.min().item<double>(), 0.99);
  EXPECT_LT(cos.min().item<double>(), 1.0 - 1e-7) << "no bf16 rounding seen";
  auto out = (dir / "b.h5").string();
  search::embed_to_file(b16, src, out, {});
  store::EmbeddingReader r(out);
  EXPECT_EQ(r.meta().precision, "bf16");
  EXPECT_TRUE(torch::equal(r.read_all().embeddings, search::embed_dataset_in_memory(b16, ds, 256).features));
  fs::remove_all(dir);
}

TEST(Embed, StreamEqualsInMemoryAndResumesAfterKill) {
  auto dir = temp_dir("embed");
  auto src = write_idx(dir, 300);
  auto model = write_model(dir, 16, 1);
  search::Embedder e(model);
  EXPECT_EQ(e.model_hash(), hash_file(model));
  auto mem = search::embed_dataset_in_memory(e, data::open_dataset(src), 64);
  ASSERT_EQ(mem.features.size(0), 300);
  EXPECT_NEAR(mem.features.norm(2, 1).mean().item<double>(), 1.0, 1e-5);

  search::EmbedOptions o;
  o.batch_size = 32;
  o.chunk_rows = 50;
  auto full = (dir / "full.h5").string();
  auto r = search::embed_to_file(e, src, full, o);
  EXPECT_EQ(r.rows, 300);
  store::EmbeddingReader fr(full);
  auto all = fr.read_all();
  EXPECT_TRUE(torch::allclose(all.embeddings, mem.features, 1e-5, 1e-6));
  EXPECT_EQ(all.ids.front(), 0);
  EXPECT_EQ(all.ids.back(), 299);
  EXPECT_EQ(all.labels[5], 1);
  EXPECT_EQ(all.paths[7], src + "#7");
  EXPECT_EQ(fr.meta().model_hash, e.model_hash());

  // A "killed" run: the first 120 rows stored in OUT.partial, never finished.
  auto resumed = (dir / "resumed.h5").string();
  {
    store::StoreMeta m;
    m.dim = 16;
    m.model_hash = e.model_hash();
    m.model_path = fs::absolute(model).string();
    m.source = src;
    m.categories = data::open_dataset(src)->class_names();
    store::EmbeddingWriter w(resumed, m, 50);
    store::Rows part;
    part.embeddings = all.embeddings.narrow(0, 0, 120).contiguous();
    for (int i = 0; i < 120; ++i) part.ids.push_back(i), part.labels.push_back(i % 4), part.paths.push_back(src + "#" + std::to_string(i));
    w.append(part);  // 2 complete chunks of 50 on disk, 20 rows buffered and lost
  }
  EXPECT_FALSE(fs::exists(resumed));
  auto r2 = search::embed_to_file(e, src, resumed, o);
  EXPECT_EQ(r2.resumed_rows, 100);
  EXPECT_EQ(r2.rows, 300);
  auto again = store::EmbeddingReader(resumed).read_all();
  EXPECT_TRUE(torch::equal(again.embeddings, all.embeddings));
  EXPECT_EQ(again.ids, all.ids);
  EXPECT_EQ(again.paths, all.paths);
  EXPECT_EQ(again.labels, all.labels);
  fs::remove_all(dir);
}

TEST(IndexDir, FlatEqualsBruteForceAndAddFindsNewItems) {
  auto dir = temp_dir("flat");
  auto rows = clustered(4, 100, 16, 0.3, 1);
  auto h5 = write_embeddings(dir, rows);
  search::BuildOptions bo;
  bo.recipe = "flat";
  auto rep = search::build_index(h5, (dir / "idx").string(), bo);
  EXPECT_EQ(rep.info.size, 400);
  EXPECT_EQ(rep.info.next_id, 400);
  EXPECT_DOUBLE_EQ(rep.info.recall, 1.0);
  EXPECT_FALSE(rep.info.has_model);

  search::IndexHandle h((dir / "idx").string());
  auto q = rows.embeddings.narrow(0, 10, 5).contiguous();
  auto hits = h.search(q, 7);
  auto truth = index::knn_inner_product(q, rows.embeddings, 7, false);
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 7; ++j) {
      EXPECT_EQ(hits[i][j].id, truth.indices[i][j].item<int64_t>());
      EXPECT_NEAR(hits[i][j].score, truth.similarities[i][j].item<float>(), 1e-5);
      EXPECT_EQ(hits[i][j].label, rows.labels[size_t(hits[i][j].id)]);
      EXPECT_EQ(hits[i][j].path, rows.paths[size_t(hits[i][j].id)]);
      EXPECT_EQ(hits[i][j].category, std::vector<std::string>({"zero", "one", "two", "three"})[size_t(hits[i][j].label)]);
    }
  // Excluding the query's own id drops it from its row.
  auto own = h.search(q.narrow(0, 0, 1), 3, {10});
  for (auto& x : own[0]) EXPECT_NE(x.id, 10);

  // Add two new far-away items; their ids continue after the largest.
  store::Rows extra = clustered(2, 1, 16, 0.0, 99);
  extra.labels = {4, 5};
  auto add = search::add_to_index((dir / "idx").string(), extra, "h");
  EXPECT_EQ(add.first_id, 400);
  EXPECT_EQ(add.size, 402);
  search::IndexHandle h2((dir / "idx").string());
  EXPECT_EQ(h2.info().generation, 2);
  auto found = h2.search(extra.embeddings, 1);
  EXPECT_EQ(found[0][0].id, 400);
  EXPECT_EQ(found[1][0].id, 401);
  EXPECT_EQ(found[1][0].category, "five");
  EXPECT_NEAR(found[0][0].score, 1.0, 1e-5);
  // The previous generation's files are gone; only what index.json names is left.
  EXPECT_FALSE(fs::exists(dir / "idx" / "index-1.faiss"));
  EXPECT_FALSE(fs::exists(dir / "idx" / "meta-1.h5"));
  EXPECT_TRUE(torch::equal(h2.vectors({401}), extra.embeddings.narrow(0, 1, 1)));
  // Rows from another model, or of another dimension, are refused.
  EXPECT_THROW(search::add_to_index((dir / "idx").string(), extra, "other-model"), Error);
  store::Rows wrong = clustered(1, 2, 8, 0.1, 3);
  EXPECT_THROW(search::add_to_index((dir / "idx").string(), wrong, "h"), Error);
  fs::remove_all(dir);
}

// index.json records the precision the embeddings were made in; an index.json written before
// the key existed takes it from the generation's meta file, which has always carried it.
TEST(IndexDir, RecordsTheEmbeddingsPrecision) {
  auto dir = temp_dir("precision_idx");
  auto rows = clustered(2, 20, 8, 0.2, 5);
  search::BuildOptions bo;
  bo.recipe = "flat";
  const auto idx = (dir / "idx").string();
  EXPECT_EQ(search::build_index(write_embeddings(dir, rows), idx, bo).info.precision, "fp32");
  EXPECT_EQ(search::build_index(write_embeddings(dir, rows, "h", "bf16"), idx, bo).info.precision, "bf16");
  EXPECT_EQ(search::read_index_info(idx).precision, "bf16");
  search::add_to_index(idx, clustered(1, 1, 8, 0.0, 6), "h");
  EXPECT_EQ(search::read_index_info(idx).precision, "bf16");

  const auto json_path = (dir / "idx" / "index.json").string();
  std::ifstream in(json_path);
  std::string text((std::istreambuf_iterator<char>(in)), {}), key = "\"precision\": \"bf16\",";
  in.close();
  const auto at = text.find(key);
  ASSERT_NE(at, std::string::npos) << text;
  text.erase(at, key.size());
  std::ofstream(json_path) << text;
  EXPECT_EQ(search::read_index_info(idx).precision, "bf16");
  fs::remove_all(dir);
}

TEST(IndexDir, AutoHnswReachesTargetRecall) {
  auto dir = temp_dir("auto");
  auto rows = clustered(20, 250, 32, 0.5, 2);  // 5000 points
  auto h5 = write_embeddings(dir, rows);
  search::BuildOptions bo;
  bo.recipe = "hnsw";
  bo.target_recall = 0.95;
  auto rep = search::build_index(h5, (dir / "idx").string(), bo);
  EXPECT_GE(rep.info.recall, 0.95);
  // Check the recorded recall independently on other queries.
  search::IndexHandle h((dir / "idx").string());
  auto q = rows.embeddings.narrow(0, 1000, 200).contiguous();
  auto truth = index::knn_inner_product(q, rows.embeddings, 10, false);
  auto res = h.ann().search(q, 10);
  EXPECT_GE(index::recall_at_k(res.indices, truth.indices), 0.9);
  fs::remove_all(dir);
}

TEST(IndexDir, CorruptOrMissingFilesAreClearErrors) {
  auto dir = temp_dir("corrupt");
  auto rows = clustered(2, 50, 8, 0.2, 4);
  auto h5 = write_embeddings(dir, rows);
  search::BuildOptions bo;
  bo.recipe = "flat";
  auto idx = (dir / "idx").string();
  search::build_index(h5, idx, bo);
  EXPECT_NO_THROW(search::IndexHandle h(idx));
  auto expect_error = [&](const std::string& needle) {
    try {
      search::IndexHandle h(idx);
      h.ann();  // the FAISS file loads in the background; its errors surface here
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  // Flip one byte of the FAISS file: same size, other hash.
  auto f = (dir / "idx" / "index-1.faiss").string();
  {
    std::fstream s(f, std::ios::in | std::ios::out | std::ios::binary);
    s.seekp(40);
    char c;
    s.read(&c, 1);
    s.seekp(40);
    c ^= 0x5a;
    s.write(&c, 1);
  }
  expect_error("index-1.faiss");
  fs::remove(f);
  expect_error("index-1.faiss");
  fs::remove(dir / "idx" / "index.json");
  expect_error("index.json");
  EXPECT_THROW(search::IndexHandle h((dir / "nowhere").string()), Error);
  // An empty embeddings file cannot be indexed.
  store::Rows none;
  none.embeddings = torch::zeros({0, 8});
  store::StoreMeta m;
  m.dim = 8;
  store::write_store((dir / "empty.h5").string(), m, none);
  EXPECT_THROW(search::build_index((dir / "empty.h5").string(), (dir / "idx2").string(), bo), Error);
  fs::remove_all(dir);
}

TEST(IndexDir, ModelTravelsWithTheIndexAndMismatchesAreRefused) {
  auto dir = temp_dir("model");
  auto src = write_idx(dir, 120);
  auto model = write_model(dir, 16, 1);
  auto other = write_model(dir, 16, 2);
  search::Embedder e(model);
  auto h5 = (dir / "e.h5").string();
  search::embed_to_file(e, src, h5, {});
  search::BuildOptions bo;
  auto idx = (dir / "idx").string();
  auto rep = search::build_index(h5, idx, bo);
  EXPECT_TRUE(rep.info.has_model);
  EXPECT_EQ(rep.info.recipe.name, "flat");  // auto: small collections are searched exactly
  search::IndexHandle h(idx);
  // An item of the collection, embedded again through the index's own model, finds itself.
  auto img = data::open_dataset(src)->get(17).image;
  auto hits = h.search(h.embedder().embed_images({img}), 1);
  EXPECT_EQ(hits[0][0].id, 17);
  EXPECT_NEAR(hits[0][0].score, 1.0, 1e-4);
  search::IndexHandle wrong(idx, other);
  EXPECT_THROW(wrong.embedder(), Error);
  bo.model_pt = other;
  EXPECT_THROW(search::build_index(h5, (dir / "idx2").string(), bo), Error);
  fs::remove_all(dir);
}

TEST(Inspect, CategoriesPurityAndPropagation) {
  auto dir = temp_dir("inspect");
  auto rows = clustered(4, 60, 16, 0.15, 5);
  // Make categories 2 and 3 overlap: move half of 3's items onto 2's centre.
  auto c2 = rows.embeddings.narrow(0, 120, 60).mean(0);
  for (int64_t i = 180; i < 210; ++i)
    rows.embeddings[i] = torch::nn::functional::normalize(c2 + 0.15 * torch::randn({16}), torch::nn::functional::NormalizeFuncOptions().dim(0));
  auto h5 = write_embeddings(dir, rows);
  search::BuildOptions bo;
  bo.recipe = "flat";
  search::build_index(h5, (dir / "idx").string(), bo);
  search::IndexHandle h((dir / "idx").string());

  auto near = search::nearest_categories(h, rows.embeddings.narrow(0, 5, 1), 20, 0.07, 5);
  EXPECT_EQ(near[0].label, 0);
  EXPECT_GT(near[0].vote, 0.9);
  EXPECT_GT(near[0].centroid, near[1].centroid);

  auto rep = search::category_report(h, 5);
  EXPECT_EQ(rep.queried, 240);
  ASSERT_EQ(rep.categories.size(), 4u);
  EXPECT_GT(rep.categories[0].purity, 0.99);
  EXPECT_GT(rep.categories[1].purity, 0.99);
  EXPECT_LT(rep.categories[3].purity, 0.9);
  ASSERT_FALSE(rep.confused.empty());
  EXPECT_EQ(rep.confused[0].a, 2);
  EXPECT_EQ(rep.confused[0].b, 3);

  // Propagation from an item of cluster 1 stays in cluster 1, never repeats, excludes it.
  auto v = search::propagation(h, rows.embeddings.narrow(0, 70, 1), 4, 3);
  EXPECT_EQ(v.anchor.id, 70);
  ASSERT_EQ(v.hops.size(), 3u);
  EXPECT_EQ(v.hops[0].size(), 4u);
  std::set<int64_t> seen;
  for (auto& hop : v.hops)
    for (auto& x : hop) {
      EXPECT_EQ(x.label, 1);
      EXPECT_NE(x.id, 70);
      EXPECT_TRUE(seen.insert(x.id).second);
    }
  // A point between clusters is not in the index: a virtual anchor.
  auto mid = torch::nn::functional::normalize(rows.embeddings.narrow(0, 0, 1) + rows.embeddings.narrow(0, 60, 1),
                                              torch::nn::functional::NormalizeFuncOptions().dim(1));
  EXPECT_EQ(search::propagation(h, mid, 4, 2).anchor.id, -1);

  auto clusters = search::cluster_collection(h, 4, 5);
  int64_t total = 0;
  int uniform = 0;  // clusters whose closest items all share one category
  for (auto& c : clusters) {
    total += c.size;
    ASSERT_EQ(c.closest.size(), 5u);
    bool same = true;
    for (auto& x : c.closest) same = same && x.label == c.closest[0].label;
    uniform += same;
  }
  EXPECT_EQ(total, 240);
  EXPECT_GE(uniform, 3);
  fs::remove_all(dir);
}

// The examples in docs/FORMATS.md are real: the readers accept them as they stand.
TEST(Formats, DocumentedExamplesParse) {
  auto block_after = [](const std::string& heading) { return invp::test::formats_example(heading); };
  auto model = model::info_from_json(block_after("## model.json"), "FORMATS.md");
  EXPECT_EQ(model.encoder.depth, 18);
  EXPECT_EQ(model.features, "head");
  EXPECT_EQ(nlohmann::json::parse(model::info_to_json(model)), nlohmann::json::parse(block_after("## model.json")))
      << "the example lacks a key invp writes, or has one it does not";
  auto idx = search::IndexInfo::from_json(block_after("## index.json"), "FORMATS.md");
  EXPECT_EQ(idx.size, 60000);
  EXPECT_EQ(idx.files.size(), 2u);
  EXPECT_EQ(idx.precision, "fp32");
  // And what invp writes today reads back to the same record.
  EXPECT_EQ(search::IndexInfo::from_json(idx.to_json(), "x").to_json(), idx.to_json());
}
