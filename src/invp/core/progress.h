// A progress bar on stderr, drawn only when stderr is a TTY and not quiet.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace invp {
class Progress {
 public:
  Progress(std::string label, int64_t total);
  ~Progress();
  void update(int64_t done);
  void finish();

 private:
  std::string label_;
  int64_t total_;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};
}  // namespace invp
