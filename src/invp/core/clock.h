// Small time helpers shared by the stages: elapsed wall time and UTC timestamps.
#pragma once
#include <chrono>
#include <string>

namespace invp {
inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
// The current time as ISO-8601 UTC, e.g. "2026-11-23T17:14:40Z".
std::string utc_now_iso();
}  // namespace invp
