// Counters behind GET /metrics (Prometheus text format 0.0.4): requests and errors by route,
// a latency histogram, and gauges the caller passes in (queue depth, generation, ...).
// Lock-free: every handler thread records into atomics.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace invp::serve {

class Metrics {
 public:
  static constexpr std::array<const char*, 9> kRoutes = {"page", "query", "categories", "propagation", "info",
                                                          "image", "health", "metrics", "other"};
  static constexpr std::array<double, 11> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,   0.25,   0.5,   1.0,  2.5};
  static size_t route_of(const std::string& path);
  void record(size_t route, int status, double seconds);
  // The exposition text; GAUGES are (name, help, value) lines added as they are.
  std::string text(const std::vector<std::pair<std::string, std::pair<std::string, double>>>& gauges) const;

 private:
  struct Route {
    std::atomic<int64_t> requests{0}, client_errors{0}, server_errors{0};
  };
  std::array<Route, kRoutes.size()> routes_;
  std::array<std::atomic<int64_t>, kBuckets.size() + 1> buckets_{};  // last: +Inf
  std::atomic<int64_t> count_{0};
  std::atomic<int64_t> sum_us_{0};
};

}  // namespace invp::serve
