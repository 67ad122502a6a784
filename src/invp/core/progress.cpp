#include <invp/core/log.h>
#include <invp/core/progress.h>

#include <cstdio>

namespace invp {
Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total),
      enabled_(log::stderr_is_tty() && !log::quiet()),
      start_(std::chrono::steady_clock::now()), last_(start_) {}
Progress::~Progress() { finish(); }
void Progress::update(int64_t done) {
  if (!enabled_ || finished_) return;
  auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  double secs = std::chrono::duration<double>(now - start_).count();
  double frac = total_ > 0 ? double(done) / double(total_) : 0.0;
  int filled = int(frac * 30);
  std::fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld %.0f/s", label_.c_str(), filled,
               "##############################", 30 - filled, "", (long long)done,
               (long long)total_, secs > 0 ? done / secs : 0.0);
  std::fflush(stderr);
}
void Progress::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  std::fprintf(stderr, "\n");
}
}  // namespace invp
