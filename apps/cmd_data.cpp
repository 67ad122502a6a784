// `invp data info` and `invp data preview`.
#include "common.h"

#include <invp/core/error.h>
#include <invp/core/log.h>
#include <invp/data/dataset.h>
#include <invp/data/preview.h>
#include <invp/data/scan.h>

#include <nlohmann/json.hpp>

#include <iostream>

namespace invp::app {
namespace {
struct DataArgs {
  std::string source;
  bool strict = false;
  int channels = 0;
  std::string out = "preview.png";
  int samples = 8, views = 7, size = 0;
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
  preview->add_option("--size", args->size, "Crop size in pixels (default: 32 for images up to 32 px, else 224)");
  preview->callback([args] {
    globals().action = [args] {
      auto ds = data::open_dataset(args->source);
      data::Sample first = ds->get(0);
      int size = args->size > 0 ? args->size : (first.image.height <= 32 ? 32 : 224);
      auto aug = size <= 64 ? data::small_image_preset(size, ds->channels()) : data::imagenet_preset();
      aug.size = size;
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
