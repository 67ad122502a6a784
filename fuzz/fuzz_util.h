// Shared by the fuzz targets: bytes to a private temp file (most readers take paths), and
// the rule that only invp::Error may escape a reader (anything else is a finding).
#pragma once
#include <invp/core/error.h>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace invp::fuzz {

inline std::string temp_file(const std::string& name, const uint8_t* data, size_t size) {
  static const auto dir = std::filesystem::temp_directory_path() / ("invp-fuzz-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto p = (dir / name).string();
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  return p;
}

// Runs body; invp::Error is the expected outcome of bad bytes, anything else aborts.
template <class F>
int expect_clean(F&& body) {
  try {
    body();
  } catch (const invp::Error&) {
  }
  return 0;
}

}  // namespace invp::fuzz
