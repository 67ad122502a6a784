#include <invp/core/log.h>
#include <invp/core/progress.h>

#include <cstdio>

namespace invp {
namespace {
// m:ss, or h:mm:ss from an hour.
std::string clock_text(double secs) {
  if (!(secs >= 0) || secs > 1e7) return "?";
  const long s = long(secs + 0.5);
  char b[32];
  if (s >= 3600) std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else std::snprintf(b, sizeof b, "%ld:%02ld", s / 60, s % 60);
  return b;
}
}  // namespace

std::string format_duration(double seconds) { return clock_text(seconds); }

Progress::Progress(std::string label, int64_t total, std::string unit, double items_per_step)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), per_step_(items_per_step),
      enabled_(log::stderr_is_tty() && !log::quiet()),
      start_(std::chrono::steady_clock::now()), last_(start_) {}
Progress::~Progress() { finish(); }

void Progress::update(int64_t done, const std::string& note) {
  if (!enabled_ || finished_) return;
  auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double frac = total_ > 0 ? double(done) / double(total_) : 0.0;
  const int filled = int(frac * 30);
  const double rate = secs > 0 ? done * per_step_ / secs : 0.0;
  const double left = done > 0 ? secs * double(total_ - done) / double(done) : -1;
  std::fprintf(stderr, "\r%s %3.0f%% [%.*s%*s] %lld/%lld  %.0f %s/s  %s<%s%s%s\033[K", label_.c_str(), 100 * frac,
               filled, "##############################", 30 - filled, "", (long long)done, (long long)total_, rate,
               unit_.c_str(), clock_text(secs).c_str(), clock_text(left).c_str(), note.empty() ? "" : "  ",
               note.c_str());
  std::fflush(stderr);
}

bool Progress::due() const {
  return enabled_ && !finished_ && std::chrono::steady_clock::now() - last_ >= std::chrono::milliseconds(100);
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  std::fprintf(stderr, "\n");
}
}  // namespace invp
