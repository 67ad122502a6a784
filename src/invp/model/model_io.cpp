#include <invp/core/atomic_file.h>
#include <invp/core/error.h>
#include <invp/model/model_io.h>

#include <torch/serialize.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace invp::model {
namespace fs = std::filesystem;
using nlohmann::json;

std::string json_path_for(const std::string& model_pt) {
  return fs::path(model_pt).replace_extension(".json").string();
}

std::string info_to_json(const ModelInfo& info) {
  const auto& e = info.encoder;
  json j{{"format_version", kModelFormatVersion},
         {"arch", {{"family", "resnet"}, {"depth", e.depth}, {"stem", e.stem}, {"width", e.width},
                   {"head", e.head}, {"head_hidden", e.head != "linear" ? e.feature_width() : 0},
                   {"feature_width", e.feature_width()}}},
         {"input", {{"channels", e.in_channels}, {"size", info.input_size}}},
         {"eval_transform", {{"resize", info.resize}, {"center_crop", info.input_size}}},
         {"mean", info.mean},
         {"std", info.std},
         {"dim", e.dim},
         {"config_hash", info.config_hash}};
  if (!info.augment.empty()) j["augment"] = json::parse(info.augment);
  j["embed"] = {{"features", info.features}};
  return j.dump(2) + "\n";
}

ModelInfo info_from_json(const std::string& text, const std::string& file) {
  ModelInfo info;
  try {
    json j = json::parse(text);
    int version = j.at("format_version").get<int>();
    if (version != kModelFormatVersion)
      throw Error(file, "model.json format version " + std::to_string(version) + " is not supported",
                  "expected " + std::to_string(kModelFormatVersion));
    auto& a = j.at("arch");
    info.encoder.depth = a.at("depth").get<int>();
    info.encoder.stem = a.at("stem").get<std::string>();
    info.encoder.width = a.at("width").get<int>();
    info.encoder.head = a.at("head").get<std::string>();
    info.encoder.in_channels = j.at("input").at("channels").get<int>();
    info.encoder.dim = j.at("dim").get<int>();
    info.input_size = j.at("input").at("size").get<int>();
    info.resize = j.at("eval_transform").at("resize").get<int>();
    info.mean = j.at("mean").get<std::vector<float>>();
    info.std = j.at("std").get<std::vector<float>>();
    info.config_hash = j.value("config_hash", "");
    if (j.contains("augment")) info.augment = j.at("augment").dump();
    if (j.contains("embed")) info.features = j.at("embed").value("features", "head");
  } catch (const json::exception& e) {
    throw Error(file, std::string("invalid model.json: ") + e.what());
  }
  try {
    info.encoder.validate();
  } catch (const Error& e) {
    throw Error(file, e.what());
  }
  if (info.features != "head" && info.features != "backbone")
    throw Error(file, "embed.features must be head or backbone, not '" + info.features + "'");
  if (info.input_size < 1 || info.input_size > 4096 || info.resize < info.input_size)
    throw Error(file, "invalid input size in model.json");
  if (info.mean.size() != size_t(info.encoder.in_channels) ||
      info.std.size() != size_t(info.encoder.in_channels))
    throw Error(file, "mean/std must have one value per input channel");
  return info;
}

std::string serialize_model(Encoder& net) {
  // Serialised in memory, then written by write_file_atomically: LibTorch's file writer
  // aborts the process (an exception out of a destructor) when the disk fills up.
  std::ostringstream bytes;
  torch::save(net, bytes);
  return bytes.str();
}

void save_model_bytes(const std::string& model_pt_bytes, const ModelInfo& info, const std::string& model_pt) {
  write_file_atomically(model_pt, model_pt_bytes);
  write_file_atomically(json_path_for(model_pt), info_to_json(info));
}

void save_model(Encoder& net, const ModelInfo& info, const std::string& model_pt) {
  save_model_bytes(serialize_model(net), info, model_pt);
}

Encoder load_model(const std::string& model_pt, ModelInfo* info_out) {
  auto json_file = json_path_for(model_pt);
  std::ifstream f(json_file);
  if (!f) throw Error(json_file, "cannot open", "a model needs model.pt and model.json side by side");
  std::stringstream s;
  s << f.rdbuf();
  ModelInfo info = info_from_json(s.str(), json_file);
  if (!fs::exists(model_pt)) throw Error(model_pt, "no such file");
  Encoder net(info.encoder);
  try {
    torch::load(net, model_pt, torch::Device(torch::kCPU));  // a CUDA-trained model loads anywhere
  } catch (const c10::Error& e) {
    throw Error(model_pt, "cannot load weights (corrupt file or architecture mismatch with model.json)");
  }
  net->eval();
  if (info_out) *info_out = info;
  return net;
}
}  // namespace invp::model
