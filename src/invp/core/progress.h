// A progress bar on stderr, drawn only when stderr is a TTY and not quiet.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace invp {
class Progress {
 public:
  // `total` steps of `items_per_step` `unit`s each (e.g. batches of 128 "img"): the bar shows
  // the percentage, steps, the item rate, elapsed<left time, and a caller's note.
  Progress(std::string label, int64_t total, std::string unit = "it", double items_per_step = 1);
  ~Progress();
  void update(int64_t done, const std::string& note = "");
  // Whether update() would draw now: compute an expensive note only then.
  bool due() const;
  void finish();

 private:
  std::string label_, unit_;
  int64_t total_;
  double per_step_;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};
// Seconds as m:ss (h:mm:ss from an hour); "?" when unknown.
std::string format_duration(double seconds);

}  // namespace invp
