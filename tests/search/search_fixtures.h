// Small synthetic collections and untrained models for the search tests.
#pragma once
#include <invp/model/encoder.h>
#include <invp/model/model_io.h>

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;

namespace invp_test {
using namespace invp;

inline fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("invp_search_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

inline void put_be32(std::ofstream& f, uint32_t v) {
  unsigned char b[4] = {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
  f.write(reinterpret_cast<char*>(b), 4);
}
// An IDX images/labels pair of n 16×16 grey images in 4 classes (bright quadrant).
inline std::string write_idx(const fs::path& dir, int n, uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  std::ofstream img(dir / "train-images-idx3-ubyte", std::ios::binary);
  std::ofstream lab(dir / "train-labels-idx1-ubyte", std::ios::binary);
  put_be32(img, 0x803), put_be32(img, n), put_be32(img, 16), put_be32(img, 16);
  put_be32(lab, 0x801), put_be32(lab, n);
  for (int i = 0; i < n; ++i) {
    int c = i % 4;
    std::vector<uint8_t> px(256);
    for (auto& p : px) p = uint8_t(rng() % 60);
    for (int y = (c / 2) * 8; y < (c / 2) * 8 + 8; ++y)
      for (int x = (c % 2) * 8; x < (c % 2) * 8 + 8; ++x) px[y * 16 + x] = 220;
    img.write(reinterpret_cast<char*>(px.data()), 256);
    char l = char(c);
    lab.write(&l, 1);
  }
  return (dir / "train-images-idx3-ubyte").string();
}

// A random (untrained) model saved as model.pt + model.json.
inline std::string write_model(const fs::path& dir, int dim, uint64_t seed) {
  torch::manual_seed(seed);
  model::ModelInfo info;
  info.encoder = {18, "small", 4, 1, "linear", dim};
  info.input_size = 16;
  info.resize = 16;
  info.mean = {0.5f};
  info.std = {0.5f};
  model::Encoder net(info.encoder);
  auto p = (dir / ("model-" + std::to_string(seed) + ".pt")).string();
  model::save_model(net, info, p);
  return p;
}

}  // namespace invp_test
