// `invp eval knn`, `invp eval linear`, `invp eval retrieval` and `invp eval copies`.
#include "common.h"

#include <invp/core/error.h>
#include <invp/core/log.h>
#include <invp/data/dataset.h>
#include <invp/eval/linear_probe.h>
#include <invp/eval/weighted_knn.h>
#include <invp/index/exact_knn.h>
#include <invp/search/copy_check.h>
#include <invp/search/embedder.h>
#include <invp/search/index_dir.h>
#include <invp/search/report.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace invp::app {
namespace {
// Cosine 1-NN top-1: the protocol of the raw-pixel baseline (docs/ALGORITHM.md, "Evaluation
// protocols").
double one_nn(const search::Features& train, const search::Features& test) {
  auto r = index::knn_inner_product(test.features, train.features, 1, false);
  auto pred = train.labels.index_select(0, r.indices.flatten());
  auto ok = test.labels.ge(0);
  return pred.eq(test.labels).logical_and(ok).sum().item<double>() / std::max<double>(1, ok.sum().item<double>());
}

struct KnnArgs {
  std::string model, train, test, device = "cpu", features = "auto", precision = "fp32", baseline;
  bool raw = false;
  int k = eval::kKnnMonitorK;
  double sigma = eval::kKnnMonitorSigma;
};

// Weighted kNN and cosine 1-NN of the model's features, or of raw pixels, as one JSON object.
nlohmann::json knn_scores(const KnnArgs& a, bool raw) {
  search::Features tr, te;
  std::string precision = "fp32", features = "head";  // as resolved
  if (raw) {
    tr = search::raw_pixel_features(data::open_dataset(a.train));
    te = search::raw_pixel_features(data::open_dataset(a.test, {0, false}));
  } else {
    search::Embedder e(a.model, a.device, search::Embedder::output_of(a.features), a.precision);
    precision = e.precision();
    features = e.features();
    tr = search::embed_dataset_in_memory(e, data::open_dataset(a.train, {e.channels(), false}));
    te = search::embed_dataset_in_memory(e, data::open_dataset(a.test, {e.channels(), false}));
  }
  if (tr.labels.max().item<int64_t>() < 0) throw Error(a.train, "has no labels");
  if (te.labels.max().item<int64_t>() < 0) throw Error(a.test, "has no labels");
  auto acc = eval::weighted_knn(tr.features, tr.labels, te.features, te.labels, a.k, a.sigma);
  std::string what = raw ? "raw pixels" : features == "head" ? a.model : a.model + " (backbone)";
  if (precision != "fp32") what += " [" + precision + "]";
  return {{"features", what}, {"train", a.train}, {"test", a.test}, {"k", a.k}, {"sigma", a.sigma},
          {"top1", acc.top1}, {"top5", acc.top5}, {"nn1_cosine", one_nn(tr, te)}, {"evaluated", acc.evaluated},
          {"precision", precision}};
}

void print_knn(const nlohmann::json& j) {
  std::printf("%s: weighted kNN (K %d, sigma %.2f) top-1 %.2f%%, top-5 %.2f%%; cosine 1-NN %.2f%% (%lld test items)\n",
              j["features"].get<std::string>().c_str(), j["k"].get<int>(), j["sigma"].get<double>(),
              100 * j["top1"].get<double>(), 100 * j["top5"].get<double>(), 100 * j["nn1_cosine"].get<double>(),
              (long long)j["evaluated"].get<int64_t>());
}

void add_knn(CLI::App* ev) {
  auto a = std::make_shared<KnnArgs>();
  auto* c = ev->add_subcommand(
      "knn",
      "Weighted kNN classification (K 200, sigma 0.07, cosine; the paper's monitor) of TEST "
      "against TRAIN features recomputed with the eval transform, plus cosine 1-NN. "
      "--raw-pixels gives the same figures for raw pixels, the baseline to beat.");
  c->add_option("-m,--model", a->model, "model.pt to evaluate");
  c->add_option("--train", a->train, "Labelled reference SOURCE")->required();
  c->add_option("--test", a->test, "Labelled SOURCE to classify")->required();
  c->add_flag("--raw-pixels", a->raw, "Use raw pixels instead of a model");
  c->add_option("-k", a->k, "K neighbours")->capture_default_str();
  c->add_option("--sigma", a->sigma, "Vote temperature")->capture_default_str();
  c->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  c->add_option("--features", a->features,
                "head (the D-dim embedding that training, the bank and indexes use), backbone "
                "(the pooled features before the projection head) or auto (what invp embed writes for this model)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "head", "backbone"}));
  c->add_option("--precision", a->precision,
                "fp32 (the reference figure), bf16 (cpu: the backbone in bfloat16, faster "
                "with AMX) or auto (bf16 where the CPU has AMX); see invp embed --help")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  c->add_option("--baseline", a->baseline,
                "raw-pixels: also score raw pixels under the same protocol and print them beside the "
                "model's, the yardstick a learned embedding should beat")
      ->check(CLI::IsMember({"raw-pixels"}));
  c->callback([a] {
    globals().action = [a] {
      if (a->raw == !a->model.empty())
        throw CLI::ValidationError("eval knn", "give exactly one of --model M or --raw-pixels");
      if (a->raw && !a->baseline.empty())
        throw CLI::ValidationError("eval knn", "--baseline compares a --model with raw pixels");
      auto model = knn_scores(*a, a->raw);
      if (!a->baseline.empty()) {
        auto raw = knn_scores(*a, true);
        if (globals().json) {
          model["baseline"] = raw;
          std::cout << model.dump() << "\n";
        } else {
          print_knn(model);
          print_knn(raw);
        }
      } else if (globals().json) {
        std::cout << model.dump() << "\n";
      } else {
        print_knn(model);
      }
    };
  });
}

void add_linear(CLI::App* ev) {
  struct Args {
    std::string model, train, test, device = "cpu", features = "backbone";
    bool raw = false;
    eval::LinearProbeOptions probe;
  };
  auto a = std::make_shared<Args>();
  auto* c = ev->add_subcommand(
      "linear",
      "Linear evaluation, the paper's headline metric: a linear classifier (softmax regression, SGD) "
      "trained on frozen TRAIN features (eval transform, standardised), top-1 on TEST. "
      "--raw-pixels gives the same for raw pixels.");
  c->add_option("-m,--model", a->model, "model.pt to evaluate");
  c->add_option("--train", a->train, "Labelled SOURCE the classifier is trained on")->required();
  c->add_option("--test", a->test, "Labelled SOURCE it is scored on")->required();
  c->add_flag("--raw-pixels", a->raw, "Use raw pixels instead of a model");
  c->add_option("--features", a->features,
                "backbone (the pooled features before the projection head, what linear evaluation "
                "usually reads) or head (the D-dim embedding)")
      ->capture_default_str()
      ->check(CLI::IsMember({"head", "backbone"}));
  c->add_option("--epochs", a->probe.epochs, "Passes over the train features")->capture_default_str();
  c->add_option("--lr", a->probe.lr, "Initial learning rate (cosine to 0; momentum 0.9)")->capture_default_str();
  c->add_option("--weight-decay", a->probe.weight_decay, "L2 penalty on the classifier")->capture_default_str();
  c->add_option("--device", a->device, "cpu or cuda (the feature pass)")->capture_default_str();
  c->callback([a] {
    globals().action = [a] {
      if (a->raw == !a->model.empty())
        throw CLI::ValidationError("eval linear", "give exactly one of --model M or --raw-pixels");
      a->probe.seed = globals().seed;
      search::Features tr, te;
      if (a->raw) {
        tr = search::raw_pixel_features(data::open_dataset(a->train));
        te = search::raw_pixel_features(data::open_dataset(a->test, {0, false}));
      } else {
        search::Embedder e(a->model, a->device,
                           a->features == "head" ? search::Embedder::Output::head : search::Embedder::Output::backbone);
        tr = search::embed_dataset_in_memory(e, data::open_dataset(a->train, {e.channels(), false}));
        te = search::embed_dataset_in_memory(e, data::open_dataset(a->test, {e.channels(), false}));
      }
      if (te.labels.max().item<int64_t>() < 0) throw Error(a->test, "has no labels");
      auto r = eval::linear_probe(tr.features, tr.labels, te.features, te.labels, a->probe);
      std::string what = a->raw ? "raw pixels" : a->model + " (" + a->features + ")";
      if (globals().json) {
        std::cout << nlohmann::json{{"features", what}, {"train", a->train}, {"test", a->test},
                                    {"epochs", a->probe.epochs}, {"lr", a->probe.lr}, {"top1", r.top1},
                                    {"top5", r.top5}, {"train_top1", r.train_top1}, {"evaluated", r.evaluated}}.dump()
                  << "\n";
      } else {
        std::printf("%s: linear top-1 %.2f%%, top-5 %.2f%% (%lld test items; train top-1 %.2f%%)\n", what.c_str(),
                    100 * r.top1, 100 * r.top5, (long long)r.evaluated, 100 * r.train_top1);
      }
    };
  });
}

nlohmann::json retrieval_json(const eval::RetrievalScores& r, const std::string& features) {
  return {{"features", features}, {"k", r.k}, {"queries", r.evaluated}, {"precision_at_1", r.precision_at_1},
          {"precision_at_k", r.precision_at_k}, {"map_at_k", r.map_at_k}};
}

void print_retrieval(const nlohmann::json& j) {
  const int k = j["k"].get<int>();
  std::printf("%s: %lld queries, precision@1 %.2f%%, precision@%d %.2f%%, mAP@%d %.2f%%\n",
              j["features"].get<std::string>().c_str(), (long long)j["queries"].get<int64_t>(),
              100 * j["precision_at_1"].get<double>(), k, 100 * j["precision_at_k"].get<double>(), k,
              100 * j["map_at_k"].get<double>());
}

void add_retrieval(CLI::App* ev) {
  struct Args {
    std::string index, queries, model, baseline;
    int k = 10;
    int64_t max_queries = 0;
  };
  auto a = std::make_shared<Args>();
  auto* c = ev->add_subcommand(
      "retrieval",
      "Precision@1, precision@k and mAP@k by label: each labelled query's hits count as "
      "relevant when they share its label. Without --queries, the index's own items query it "
      "(each leaving itself out).");
  c->add_option("-i,--index", a->index, "Index directory")->required();
  c->add_option("-q,--queries", a->queries, "Labelled query SOURCE (embedded with the index's model)");
  c->add_option("-k", a->k, "Ranked list length")->capture_default_str()->check(at_least(1));
  c->add_option("--max-queries", a->max_queries, "Use at most this many queries (0 = all)");
  c->add_option("--model", a->model, "Model override (must be the index's model)");
  c->add_option("--baseline", a->baseline,
                "raw-pixels: also score raw pixels of the same items under the same protocol (exact cosine "
                "over the model's input pooled to at most 32 px a side, centred), printed beside the model's")
      ->check(CLI::IsMember({"raw-pixels"}));
  c->callback([a] {
    globals().action = [a] {
      search::IndexHandle h(a->index, a->model);
      if (!h.has_labels()) throw Error(a->index, "the index has no labels to judge relevance");
      torch::Tensor q, qlab, qids;
      std::vector<int64_t> exclude;
      if (!a->queries.empty()) {
        auto& e = h.embedder();
        auto f = search::embed_dataset_in_memory(e, data::open_dataset(a->queries, {e.channels(), false}));
        q = f.features, qlab = f.labels, qids = f.ids;
      } else {
        const auto& ids = h.ids();
        q = h.meta().read_all().embeddings;
        std::vector<int64_t> l(h.labels().begin(), h.labels().end());
        qlab = torch::tensor(l, torch::kLong);
        exclude = ids;
      }
      if (a->max_queries > 0 && a->max_queries < q.size(0)) {
        q = q.narrow(0, 0, a->max_queries);
        qlab = qlab.narrow(0, 0, a->max_queries);
        if (!exclude.empty()) exclude.resize(size_t(a->max_queries));
      }
      auto j = retrieval_json(search::evaluate_retrieval(h, q, qlab, exclude, a->k), "model");
      j["index"] = a->index;
      if (!a->baseline.empty()) {  // the same protocol over raw pixels of the same items and queries
        std::shared_ptr<data::Dataset> qs;
        if (!a->queries.empty()) qs = data::open_dataset(a->queries, {h.embedder().channels(), false});
        j["baseline"] = retrieval_json(search::raw_pixel_retrieval(h, qlab, a->k, qs.get(), qids), "raw pixels");
      }
      if (globals().json) {
        std::cout << j.dump() << "\n";
        return;
      }
      print_retrieval(j);
      if (j.contains("baseline")) print_retrieval(j["baseline"]);
    };
  });
}

void print_copy_check(const search::CopyCheckReport& r, const std::string& model, const std::string& source) {
  std::printf("copies of %lld of %lld images sampled from %s, searched for among the %lld (cosine, exact)\n",
              (long long)r.queries, (long long)r.collection, source.c_str(), (long long)r.collection);
  std::printf("%-10s %14s %14s %14s %14s\n", "distortion", "model r@1", ("model r@" + std::to_string(r.k)).c_str(),
              "pixels r@1", ("pixels r@" + std::to_string(r.k)).c_str());
  int wins = 0;
  for (auto& row : r.rows) {
    std::printf("%-10s %14.3f %14.3f %14.3f %14.3f\n", row.distortion.c_str(), row.model_at_1, row.model_at_k,
                row.raw_at_1, row.raw_at_k);
    wins += row.model_at_1 > row.raw_at_1;
  }
  std::printf("%s finds the original first more often than raw pixels under %d of %zu distortions\n", model.c_str(),
              wins, r.rows.size());
}

void add_copies(CLI::App* ev) {
  struct Args {
    std::string model, data, device = "cpu", features = "auto", precision = "fp32";
    std::vector<std::string> distortions;
    search::CopyCheckOptions opts;
  };
  auto a = std::make_shared<Args>();
  auto* c = ev->add_subcommand(
      "copies",
      "A check that needs no labels: distorted copies (crop, loss of resolution, JPEG, colour change, "
      "mirror image, a mix) of sampled images are searched for among the sample, and recall@1 and recall@k "
      "count how often the original comes back, for the model and for raw pixels (the model's input "
      "pooled to at most 32 px a side, centred, cosine). Tells whether training paid off on your own "
      "collection before you trust an index of it.");
  c->add_option("-m,--model", a->model, "model.pt to check")->required();
  c->add_option("-d,--data", a->data, "SOURCE of images (any invp data source; labels are not used)")->required();
  c->add_option("--collection", a->opts.collection, "Images sampled from SOURCE (at random, by --seed) and searched among")
      ->capture_default_str()
      ->check(at_least(2));
  c->add_option("--queries", a->opts.queries, "Sampled images that get a distorted copy, for each distortion")
      ->capture_default_str()
      ->check(at_least(1));
  c->add_option("-k", a->opts.k, "recall@k counts the original anywhere in the top k")
      ->capture_default_str()
      ->check(at_least(1));
  c->add_option("--distortions", a->distortions,
                "Comma-separated subset of crop,scale,jpeg,colour,flip,mixed (default: all)")
      ->delimiter(',')
      ->check(CLI::IsMember({"crop", "scale", "jpeg", "colour", "flip", "mixed"}));
  c->add_option("--features", a->features, "auto, head or backbone, as for invp embed")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "head", "backbone"}));
  c->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  c->add_option("--precision", a->precision, "fp32, bf16 or auto, as for invp embed")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  c->callback([a] {
    globals().action = [a] {
      if (!a->distortions.empty()) {
        a->opts.distortions.clear();
        for (auto& d : a->distortions) a->opts.distortions.push_back(data::distortion_named(d));
      }
      a->opts.seed = globals().seed;
      search::Embedder e(a->model, a->device, search::Embedder::output_of(a->features), a->precision);
      auto ds = data::open_dataset(a->data, {e.channels(), false});
      auto r = search::copy_check(e, *ds, a->opts);
      if (r.skipped_bad > 0) log::warn(a->data + ": " + std::to_string(r.skipped_bad) + " unreadable images skipped");
      if (!globals().json) return print_copy_check(r, a->model, a->data);
      nlohmann::json rows = nlohmann::json::array();
      for (auto& row : r.rows)
        rows.push_back({{"distortion", row.distortion},
                        {"model", {{"recall_at_1", row.model_at_1}, {"recall_at_k", row.model_at_k}}},
                        {"raw_pixels", {{"recall_at_1", row.raw_at_1}, {"recall_at_k", row.raw_at_k}}}});
      std::cout << nlohmann::json{{"model", a->model}, {"features", e.features()}, {"data", a->data},
                                  {"collection", r.collection}, {"queries", r.queries}, {"k", r.k},
                                  {"seed", a->opts.seed}, {"skipped_bad", r.skipped_bad}, {"rows", rows}}.dump()
                << "\n";
    };
  });
}
}  // namespace

void add_eval_commands(CLI::App& app) {
  auto* ev = app.add_subcommand("eval", "Evaluate embeddings: weighted kNN and linear accuracy, retrieval precision and mAP, and (without "
                                  "labels) how often distorted copies find their originals");
  ev->require_subcommand(1);
  add_knn(ev);
  add_linear(ev);
  add_retrieval(ev);
  add_copies(ev);
  for (auto* sub : ev->get_subcommands({})) sub->fallthrough();
}
}  // namespace invp::app
