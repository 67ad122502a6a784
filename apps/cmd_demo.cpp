// `invp demo`: the most complete flow available on the default data (Fashion-MNIST):
// dataset summary of both splits and an augmentation preview. Training, embedding and
// search join this flow as they land.
#include "common.h"

#include <invp/core/atomic_file.h>
#include <invp/core/log.h>
#include <invp/data/dataset.h>
#include <invp/data/preview.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>

namespace invp::app {
nlohmann::json run_data_info(const std::string& source, bool strict);

void add_demo_command(CLI::App& app) {
  auto data = std::make_shared<std::string>("/usr/share/datasets/fashion-mnist");
  auto out = std::make_shared<std::string>("invp-demo");
  auto* demo = app.add_subcommand("demo", "Run the whole available flow on the default data");
  demo->add_option("--data", *data, "Dataset directory")->capture_default_str();
  demo->add_option("--out", *out, "Output directory")->capture_default_str();
  demo->callback([data, out] {
    globals().action = [data, out] {
      std::filesystem::create_directories(*out);
      nlohmann::json result;
      for (const char* split : {"train", "test"}) {
        auto source = *data + ":" + split;
        log::info("summarising " + source);
        auto j = run_data_info(source, false);
        result[split] = j;
        if (!globals().json)
          std::cout << split << ": " << j["count"] << " images, " << j["classes"].size()
                    << " classes, " << j["bad_files"] << " bad files\n";
      }
      auto summary = *out + "/data-summary.json";
      write_file_atomically(summary, result.dump(2) + "\n");
      auto ds = data::open_dataset(*data + ":train");
      auto preview = *out + "/augmentation-preview.png";
      data::PreviewOptions opt;
      opt.seed = globals().seed;
      data::write_preview(*ds, data::small_image_preset(32, ds->channels()), opt, preview);
      if (globals().json) {
        std::cout << nlohmann::json{{"summary", summary}, {"preview", preview}}.dump() << "\n";
      } else {
        std::cout << "dataset summary:       " << summary << "\n"
                  << "augmentation preview:  " << preview << "\n";
      }
    };
  });
}
}  // namespace invp::app
