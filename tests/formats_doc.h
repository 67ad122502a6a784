// The JSON examples in docs/FORMATS.md, for tests that hold what invp reads and writes to
// them. The file is found from the working directory upwards, or under INVP_SOURCE_DIR.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace invp::test {
// The first ```json block after `heading` ("## metrics.jsonl ..."); "" and a test failure
// when the file or the heading is missing.
inline std::string formats_example(const std::string& heading) {
  namespace fs = std::filesystem;
  fs::path root = fs::current_path();
  while (!fs::exists(root / "docs/FORMATS.md") && root.has_parent_path() && root != root.parent_path())
    root = root.parent_path();
  if (const char* s = std::getenv("INVP_SOURCE_DIR")) root = s;
  std::ifstream f(root / "docs/FORMATS.md");
  if (!f) {
    ADD_FAILURE() << "docs/FORMATS.md not found: run from inside the source tree";
    return "";
  }
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto h = text.find(heading);
  if (h == std::string::npos) {
    ADD_FAILURE() << "no heading " << heading << " in docs/FORMATS.md";
    return "";
  }
  auto b = text.find("```json\n", h) + 8;
  return text.substr(b, text.find("```", b) - b);
}
}  // namespace invp::test
