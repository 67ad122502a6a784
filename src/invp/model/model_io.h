// model.pt + model.json: LibTorch's C++ API cannot script a model, so model.pt holds the
// parameters and buffers and model.json (beside it, same stem) says how to rebuild it.
#pragma once
#include <invp/model/encoder.h>

#include <string>
#include <vector>

namespace invp::model {

constexpr int kModelFormatVersion = 1;

struct ModelInfo {
  EncoderConfig encoder;
  int input_size = 32;               // square side fed to the network
  int resize = 32;                   // eval transform: resize shorter side, then centre-crop input_size
  std::vector<float> mean{0.5f}, std{0.5f};  // per input channel
  std::string config_hash;           // hash of the training-defining config
  // model.json's "augment": the training augmentation's recipe name and strengths, as JSON
  // object text (train::TrainConfig::augment_json); empty for models written before it.
  std::string augment;
  // model.json's "embed": what `invp embed` writes when not told (head or backbone features).
  std::string features = "head";
};

std::string json_path_for(const std::string& model_pt);  // "x/model.pt" -> "x/model.json"
std::string info_to_json(const ModelInfo& info);
ModelInfo info_from_json(const std::string& text, const std::string& file_for_errors);

// model.pt's bytes (parameters and buffers; GPU tensors are copied to the host).
std::string serialize_model(Encoder& net);
// Writes model.pt then model.json, each atomically.
void save_model(Encoder& net, const ModelInfo& info, const std::string& model_pt);
void save_model_bytes(const std::string& model_pt_bytes, const ModelInfo& info, const std::string& model_pt);
// Reads model.json beside model_pt, rebuilds the encoder and loads its weights (eval mode).
Encoder load_model(const std::string& model_pt, ModelInfo* info_out = nullptr);

}  // namespace invp::model
