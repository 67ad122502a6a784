// The JSON files invp reads back: index.json, model.json and a run's config.json.
#include <invp/model/model_io.h>
#include <invp/search/index_dir.h>
#include <invp/train/train_config.h>

#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  invp::fuzz::expect_clean([&] { invp::search::IndexInfo::from_json(text, "index.json"); });
  invp::fuzz::expect_clean([&] { invp::model::info_from_json(text, "model.json"); });
  return invp::fuzz::expect_clean([&] { invp::train::TrainConfig::from_json(text, "config.json").validate(); });
}
