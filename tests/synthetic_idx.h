// A tiny labelled IDX data set for training tests: four classes, a bright 10×10 square in one
// quadrant of a 28×28 image over noise.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace invp_test {
inline void put_be32(std::ofstream& f, uint32_t v) {
  unsigned char b[4] = {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
  f.write(reinterpret_cast<char*>(b), 4);
}

// Writes dir/<prefix>-images-idx3-ubyte and dir/<prefix>-labels-idx1-ubyte with n items.
inline void write_idx(const std::filesystem::path& dir, const std::string& prefix, int n, uint64_t seed) {
  std::filesystem::create_directories(dir);
  std::mt19937_64 rng(seed);
  std::ofstream img(dir / (prefix + "-images-idx3-ubyte"), std::ios::binary);
  std::ofstream lab(dir / (prefix + "-labels-idx1-ubyte"), std::ios::binary);
  put_be32(img, 0x803), put_be32(img, uint32_t(n)), put_be32(img, 28), put_be32(img, 28);
  put_be32(lab, 0x801), put_be32(lab, uint32_t(n));
  for (int i = 0; i < n; ++i) {
    int c = i % 4;
    std::vector<uint8_t> px(28 * 28);
    for (auto& p : px) p = uint8_t(rng() % 60);
    int y0 = 2 + (c / 2) * 14 + int(rng() % 3), x0 = 2 + (c % 2) * 14 + int(rng() % 3);
    for (int y = y0; y < y0 + 10; ++y)
      for (int x = x0; x < x0 + 10; ++x) px[size_t(y * 28 + x)] = uint8_t(200 + rng() % 55);
    img.write(reinterpret_cast<char*>(px.data()), std::streamsize(px.size()));
    char l = char(c);
    lab.write(&l, 1);
  }
}
}  // namespace invp_test
