// `invp data info` and `invp data preview`.
#include "common.h"

#include <invp/core/error.h>
#include <invp/core/log.h>
#include <invp/data/dataset.h>
#include <invp/data/preview.h>
#include <invp/data/scan.h>
#include <invp/train/train_config.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

namespace invp::app {
void add_augment_options(CLI::App* t, train::TrainConfig& c);  // cmd_train.cpp

namespace {
struct DataArgs {
  std::string source;
  bool strict = false;
  int channels = 0;
  std::string out = "preview.png";
  int samples = 8, views = 7, size = 0;
  std::string run;  // a training run directory whose transform to preview
  std::shared_ptr<train::TrainConfig> train = std::make_shared<train::TrainConfig>();
};

nlohmann::json summary_json(const std::string& source, const data::Dataset& ds,
                            const data::ScanReport& r) {
  nlohmann::json j;
  j["source"] = source;
  j["format"] = ds.kind();
  j["count"] = ds.size();
  j["decoded"] = r.ok;
  j["bad_files"] = r.bad;
  j["channels"] = ds.channels();
  auto names = ds.class_names();
  nlohmann::json classes = nlohmann::json::array();
  for (auto& [label, count] : r.label_counts) {
    nlohmann::json c{{"label", label}, {"count", count}};
    if (label >= 0 && size_t(label) < names.size()) c["name"] = names[label];
    classes.push_back(c);
  }
  j["classes"] = classes;
  nlohmann::json sizes = nlohmann::json::array();
  for (auto& [hw, count] : r.sizes)
    sizes.push_back({{"height", hw.first}, {"width", hw.second}, {"count", count}});
  j["image_sizes"] = sizes;
  return j;
}

void print_summary(const nlohmann::json& j) {
  std::cout << "source     " << j["source"].get<std::string>() << "\n"
            << "format     " << j["format"].get<std::string>() << "\n"
            << "images     " << j["count"] << " (" << j["decoded"] << " decoded, "
            << j["bad_files"] << " bad)\n"
            << "channels   " << j["channels"] << "\n";
  std::cout << "sizes     ";
  int shown = 0;
  for (auto& s : j["image_sizes"]) {
    if (shown++ == 5) { std::cout << " ..."; break; }
    std::cout << " " << s["height"] << "x" << s["width"] << " (" << s["count"] << ")";
  }
  std::cout << "\nclasses    " << j["classes"].size() << "\n";
  for (auto& c : j["classes"]) {
    std::cout << "  " << c["label"].get<int>() << "  " << c["count"];
    if (c.contains("name")) std::cout << "  " << c["name"].get<std::string>();
    std::cout << "\n";
  }
}
}  // namespace

nlohmann::json run_data_info(const std::string& source, bool strict) {
  auto ds = data::open_dataset(source, {0, strict});
  auto report = data::scan_dataset(*ds, strict);
  if (report.ok == 0) throw Error(source, "no decodable image", "check the files' formats");
  return summary_json(source, *ds, report);
}

void add_data_commands(CLI::App& app) {
  auto args = std::make_shared<DataArgs>();
  auto* data = app.add_subcommand("data", "Inspect a dataset source");
  data->require_subcommand(1);

  auto* info = data->add_subcommand("info", "Count images, classes, sizes and bad files of SOURCE");
  info->add_option("SOURCE", args->source, "Dataset source")->required();
  info->add_flag("--strict", args->strict, "Stop at the first bad file, naming it");
  info->callback([args] {
    globals().action = [args] {
      auto j = run_data_info(args->source, args->strict);
      if (globals().json) std::cout << j.dump(2) << "\n";
      else print_summary(j);
    };
  });

  auto* preview = data->add_subcommand(
      "preview", "Write a montage of samples and their training augmentations (PNG)");
  preview->add_option("SOURCE", args->source, "Dataset source")->required();
  preview->add_option("-o,--out", args->out, "Output PNG")->capture_default_str();
  preview->add_option("--samples", args->samples, "Rows (samples)")->capture_default_str();
  preview->add_option("--views", args->views, "Augmented views per sample")->capture_default_str();
  preview->add_option("--size", args->size, "Crop size in pixels, as train's --input-size (default: 32 for images up to 32 px, else 224)");
  preview->add_option("--run", args->run,
                      "A training run directory: preview the transform its config.json records (recipe, size and "
                      "strengths) instead of the flags below");
  add_augment_options(preview, *args->train);
  preview->callback([args] {
    globals().action = [args] {
      auto ds = data::open_dataset(args->source);
      data::Sample first = ds->get(0);
      // A run's own transform (its config.json), else the one `invp train` builds from these flags.
      train::TrainConfig tc = *args->train;
      if (!args->run.empty()) {
        auto file = args->run + "/config.json";
        std::ifstream in(file);
        if (!in) throw Error(file, "cannot read the run's config.json", "give a directory `invp train --out` wrote");
        std::stringstream text;
        text << in.rdbuf();
        tc = train::TrainConfig::from_json(text.str(), file);
      } else {
        tc.input_size = args->size > 0 ? args->size : (first.image.height <= 32 ? 32 : 224);
      }
      tc.validate();
      auto aug = tc.augment_config(ds->channels());
      data::PreviewOptions opt;
      opt.samples = args->samples;
      opt.views = args->views;
      opt.seed = globals().seed;
      int rows = data::write_preview(*ds, aug, opt, args->out);
      if (globals().json)
        std::cout << nlohmann::json{{"out", args->out}, {"rows", rows}, {"views", args->views}}.dump()
                  << "\n";
      else
        log::info("wrote " + args->out + " (" + std::to_string(rows) + " samples x " +
                  std::to_string(args->views) + " augmentations)");
    };
  });
}
}  // namespace invp::app
