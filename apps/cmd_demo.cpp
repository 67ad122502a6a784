// `invp demo`: the whole flow on the default data (Fashion-MNIST), in a few minutes on two
// cores: data summary and augmentation preview, a short training run, embedding the
// training split, an automatically chosen and tuned index, queries with montages,
// category inspection, and retrieval/kNN figures. Rerunning reuses what is already done
// (training resumes from its checkpoint; finished steps are redone quickly).
#include "common.h"

#include <invp/core/atomic_file.h>
#include <invp/core/error.h>
#include <invp/core/log.h>
#include <invp/data/dataset.h>
#include <invp/data/montage.h>
#include <invp/data/preview.h>
#include <invp/eval/weighted_knn.h>
#include <invp/search/embedder.h>
#include <invp/search/index_dir.h>
#include <invp/search/inspect.h>
#include <invp/search/report.h>
#include <invp/train/trainer.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

namespace invp::app {
nlohmann::json run_data_info(const std::string& source, bool strict);

namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct DemoArgs {
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string out = "invp-demo";
  int epochs = 5;
  int64_t limit = 12800;
  int width = 8;
};

void step(const std::string& what) { log::info("== " + what); }

// What the full Fashion-MNIST CPU preset reaches (mean of the float32 runs in BENCHMARKS.md,
// "Current summary"), so the demo's short run has a reference point.
constexpr double kFullPresetKnn = 0.8493;
constexpr const char* kFullPresetCommand = "invp --config configs/fashion-mnist.toml train --out runs/fm";

std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100 * v);
  return b;
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  auto* demo = app.add_subcommand(
      "demo",
      "The whole flow on the default data (Fashion-MNIST): train briefly, embed, build an "
      "automatic index, query it, inspect categories; says where each file went.");
  demo->add_option("--data", a->data, "Dataset directory (IDX train/test pair)")->capture_default_str();
  demo->add_option("--out", a->out, "Output directory")->capture_default_str();
  demo->add_option("--epochs", a->epochs, "Training epochs")->capture_default_str();
  demo->add_option("--limit", a->limit, "Training images used (0 = all 60k)")->capture_default_str();
  demo->add_option("--width", a->width, "Base channels of the ResNet-18")->capture_default_str();
  demo->callback([a] {
    globals().action = [a] {
      auto t0 = Clock::now();
      fs::create_directories(a->out);
      const std::string train_src = a->data + ":train", test_src = a->data + ":test";
      nlohmann::json result;
      std::vector<std::pair<std::string, std::string>> files;

      step("1/6 data: summary and augmentation preview");
      for (const auto& [split, src] : {std::pair{"train", train_src}, std::pair{"test", test_src}})
        result["data"][split] = run_data_info(src, false);
      auto summary = a->out + "/data-summary.json";
      write_file_atomically(summary, result["data"].dump(2) + "\n");
      files.push_back({"dataset summary", summary});
      auto ds = data::open_dataset(train_src);
      auto preview = a->out + "/augmentation-preview.png";
      data::PreviewOptions popt;
      popt.seed = globals().seed;
      data::write_preview(*ds, data::small_image_preset(28, ds->channels()), popt, preview);
      files.push_back({"augmentation preview", preview});

      step("2/6 train: Invariance Propagation, " + std::to_string(a->epochs) + " epochs on " +
           (a->limit > 0 ? std::to_string(a->limit) : std::string("all")) + " images");
      train::TrainConfig cfg;
      cfg.data = train_src;
      cfg.test_data = test_src;
      cfg.limit = a->limit;
      cfg.width = a->width;
      cfg.input_size = 28;
      cfg.epochs = a->epochs;
      cfg.warmup = std::max(1, a->epochs / 3);
      cfg.knn_every = a->epochs;
      cfg.seed = globals().seed;
      const std::string run = a->out + "/run";
      train::Trainer trainer(cfg, run, false);
      double knn = -1;
      trainer.run([&](const train::EpochMetrics& m) {
        log::info("epoch " + std::to_string(m.epoch) + "/" + std::to_string(cfg.epochs) + "  loss " +
                  std::to_string(m.loss).substr(0, 6) + "  " + std::to_string(int(m.images_per_second)) + " img/s" +
                  (m.knn_top1 >= 0 ? "  kNN top-1 " + pct(m.knn_top1) : ""));
        if (m.knn_top1 >= 0) knn = m.knn_top1;
      });
      if (train::stop_requested()) throw Error(run, "interrupted", "rerun invp demo to continue");
      const std::string model = run + "/model.pt";
      files.push_back({"trained model", model});
      files.push_back({"training metrics", run + "/metrics.jsonl"});

      step("3/6 embed the 60k training images");
      search::Embedder emb(model);
      const std::string h5 = a->out + "/fashion-mnist-train.h5";
      search::EmbedOptions eo;
      auto er = search::embed_to_file(emb, train_src, h5, eo);
      log::info("embedded " + std::to_string(er.rows) + " images at " + std::to_string(int(er.images_per_second)) + " img/s");
      files.push_back({"embeddings", h5});

      step("4/6 index: automatic recipe, tuned to recall@10 >= 0.95");
      const std::string idx = a->out + "/index";
      search::BuildOptions bo;
      bo.seed = globals().seed;
      auto br = search::build_index(h5, idx, bo);
      log::info(br.info.factory + " (" + br.info.choice_reason + "), recall@10 " +
                std::to_string(br.info.recall).substr(0, 5) + ", " +
                std::to_string(int(br.info.queries_per_second)) + " queries/s");
      files.push_back({"index", idx});

      step("5/6 query: test images against the index");
      search::IndexHandle h(idx);
      auto test = data::open_dataset(test_src);
      std::vector<data::Image> qimgs;
      std::vector<std::string> qpaths;
      fs::create_directories(a->out + "/queries");
      for (int i = 0; i < 6; ++i) {
        auto s = test->get(size_t(i) * 997 % test->size());
        auto p = a->out + "/queries/query-" + std::to_string(i) + ".png";
        data::write_image_png(s.image, p);
        qimgs.push_back(s.image);
        qpaths.push_back(p);
      }
      auto q = h.embedder().embed_images(qimgs);
      auto hits = h.search(q, 8);
      auto montage = a->out + "/query-montage.png";
      search::write_hits_montage(qimgs, {}, hits, 9, 72, montage);
      files.push_back({"query images", a->out + "/queries/"});
      files.push_back({"query montage", montage});

      step("6/6 inspect and evaluate");
      auto rep = search::category_report(h, 10, 10000, globals().seed);
      std::vector<std::string> names;
      std::vector<double> vals;
      for (auto& c : rep.categories) names.push_back(c.name), vals.push_back(c.purity);
      auto chart = a->out + "/category-purity.png";
      data::write_bar_chart("neighbour purity @10", names, vals, chart);
      files.push_back({"category purity chart", chart});
      auto prop = search::propagation(h, q.narrow(0, 0, 1), 4, 3);
      int reached = 0, same = 0;
      for (auto& hop : prop.hops)
        for (auto& x : hop) ++reached, same += x.label == hits[0][0].label;
      auto f = search::embed_dataset_in_memory(h.embedder(), test);
      auto rr = search::evaluate_retrieval(h, f.features.narrow(0, 0, 2000), f.labels.narrow(0, 0, 2000), {}, 10);
      // The yardstick: raw pixels under exactly the same protocols (the kNN monitor's bank is
      // the first `limit` training images; retrieval searches all of them).
      step("raw pixels under the same protocols");
      auto raw_train = search::raw_pixel_features(ds), raw_test = search::raw_pixel_features(test);
      const int64_t bank_rows = a->limit > 0 ? std::min<int64_t>(a->limit, raw_train.features.size(0))
                                             : raw_train.features.size(0);
      auto raw_knn = eval::weighted_knn(raw_train.features.narrow(0, 0, bank_rows), raw_train.labels.narrow(0, 0, bank_rows),
                                        raw_test.features, raw_test.labels);
      auto raw_rr = search::exact_retrieval(raw_train.features, raw_train.labels, raw_test.features.narrow(0, 0, 2000),
                                            raw_test.labels.narrow(0, 0, 2000), 10);

      double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      nlohmann::json files_j;
      for (auto& [what, path] : files) files_j[what] = path;
      result["files"] = files_j;
      result["knn_top1"] = knn;
      result["index"] = {{"factory", br.info.factory}, {"recall_at_10", br.info.recall},
                         {"queries_per_second", br.info.queries_per_second}};
      result["retrieval"] = {{"precision_at_1", rr.precision_at_1}, {"precision_at_10", rr.precision_at_k},
                             {"map_at_10", rr.map_at_k}, {"queries", rr.evaluated}};
      result["neighbour_purity_at_10"] = rep.purity;
      result["raw_pixels"] = {{"knn_top1", raw_knn.top1},
                              {"retrieval", {{"precision_at_1", raw_rr.precision_at_1},
                                             {"precision_at_10", raw_rr.precision_at_k},
                                             {"map_at_10", raw_rr.map_at_k}}}};
      result["full_preset"] = {{"knn_top1", kFullPresetKnn}, {"command", kFullPresetCommand},
                               {"source", "BENCHMARKS.md, Current summary"}};
      result["seconds"] = secs;
      result["serve_command"] = "invp serve --index " + idx;
      write_file_atomically(a->out + "/demo.json", result.dump(2) + "\n");
      if (globals().json) {
        std::cout << result.dump() << "\n";
        return;
      }
      std::cout << "\ninvp demo finished in " << int(secs) << " s\n";
      std::printf("  %-44s %10s %10s\n", "", "learned", "raw pixels");
      if (knn >= 0)
        std::printf("  %-44s %10s %10s\n", "weighted kNN top-1 (10k test vs the bank)", pct(knn).c_str(),
                    pct(raw_knn.top1).c_str());
      std::printf("  %-44s %10s %10s\n", "retrieval precision@1 (2000 test queries)", pct(rr.precision_at_1).c_str(),
                  pct(raw_rr.precision_at_1).c_str());
      std::printf("  %-44s %10s %10s\n", "retrieval precision@10", pct(rr.precision_at_k).c_str(),
                  pct(raw_rr.precision_at_k).c_str());
      std::printf("  %-44s %10s %10s\n", "retrieval mAP@10", pct(rr.map_at_k).c_str(), pct(raw_rr.map_at_k).c_str());
      std::cout << "  This is a " << a->epochs << "-epoch smoke run on " << bank_rows
                << " images, too short to pass raw pixels. The full CPU preset (" << kFullPresetCommand
                << ", 28 epochs) reaches weighted kNN " << pct(kFullPresetKnn) << " (raw pixels: 79.1% under that protocol).\n"
                << "  index: " << br.info.factory << ", recall@10 " << pct(br.info.recall) << "\n"
                << "  neighbour purity @10: " << pct(rep.purity) << "\n"
                << "  propagation from the first query: " << reached << " items in " << prop.hops.size()
                << " hops, " << same << " of its top hit's category\n"
                << "first query's hits:\n";
      for (auto& x : hits[0]) std::printf("  %.3f  %-12s  %s\n", x.score, x.category.c_str(), x.path.c_str());
      std::cout << "files:\n";
      for (auto& [what, path] : files) std::printf("  %-24s %s\n", what.c_str(), path.c_str());
      std::cout << "try:  ./build/invp query --index " << idx << " " << qpaths[1] << " --montage q.png\n"
                << "      ./build/invp inspect --index " << idx << " --categories\n";
      // Last, so it is the line a user copies: the index browsable in a web browser.
      std::cout << "serve it:  ./build/invp serve --index " << idx << "   (then open http://127.0.0.1:8080/)\n";
    };
  });
}
}  // namespace invp::app
