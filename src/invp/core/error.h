// Errors a user can cause: invp::Error carries the file and a fix, and the CLI prints it
// as one line `invp: error: <file>: <problem> (<fix>)` with exit code 1.
#pragma once
#include <stdexcept>
#include <string>

namespace invp {

class Error : public std::runtime_error {
 public:
  Error(const std::string& file, const std::string& problem, const std::string& fix = "")
      : std::runtime_error(format(file, problem, fix)), file_(file) {}
  const std::string& file() const { return file_; }

 private:
  static std::string format(const std::string& file, const std::string& problem,
                            const std::string& fix) {
    std::string s = file.empty() ? problem : file + ": " + problem;
    if (!fix.empty()) s += " (" + fix + ")";
    return s;
  }
  std::string file_;
};

}  // namespace invp
