// --threshold auto: a threshold from the distribution of each item's nearest-neighbour
// similarity. Most items of a collection are not duplicated: their nearest neighbour is
// merely similar and forms the bulk of the distribution; items that have a near-duplicate
// pile up in a second mode close to 1. The threshold is the bottom of the valley between the
// two (the middle of the lowest stretch, so a gap with no items at all is cut in its
// middle). When there is no such second mode, or no valley clearly below it, the
// distribution does not say where duplicates start and the caller's fallback is used.
#include <invp/search/dedup.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace invp::search {
namespace {
constexpr int kBins = 200;
constexpr int kSmooth = 2;            // moving average over 2·kSmooth + 1 bins
constexpr double kLowQuantile = 0.01;  // the histogram starts here: outliers far below are binned first
constexpr double kValleyDepth = 0.5;  // the valley must be below this share of the near-1 mode
// Above the valley there must be a mode, not a few stragglers of the bulk's tail: at least
// this share of the items, and at least kMinModeItems.
constexpr double kMinModeShare = 0.005;
constexpr int64_t kMinModeItems = 5;

std::string fixed3(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", v);
  return b;
}
}  // namespace

ThresholdProposal propose_threshold(const std::vector<float>& nn_similarities, double fallback) {
  ThresholdProposal p;
  p.threshold = fallback;
  if (nn_similarities.empty()) {
    p.reason = "no item has a neighbour; default threshold " + fixed3(fallback);
    return p;
  }
  std::vector<float> v(nn_similarities);
  std::sort(v.begin(), v.end());
  const double q = v[size_t(kLowQuantile * double(v.size() - 1))];
  p.lo = std::clamp(std::floor(q * 100) / 100, -1.0, 0.95);
  p.hi = 1;
  const double width = (p.hi - p.lo) / kBins;
  p.counts.assign(kBins, 0);
  for (float x : v) ++p.counts[size_t(std::clamp(int((x - p.lo) / width), 0, kBins - 1))];
  std::vector<double> s(kBins, 0);
  for (int i = 0; i < kBins; ++i) {
    int n = 0;
    for (int j = std::max(0, i - kSmooth); j <= std::min(kBins - 1, i + kSmooth); ++j) s[size_t(i)] += double(p.counts[size_t(j)]), ++n;
    s[size_t(i)] /= n;
  }
  const int bulk = int(std::max_element(s.begin(), s.end()) - s.begin());
  const int upper = bulk + (kBins - bulk) / 2;  // the near-1 mode lies between this and 1
  const int peak = upper >= kBins ? bulk : int(std::max_element(s.begin() + upper, s.end()) - s.begin());
  auto centre = [&](double bin) { return p.lo + width * (bin + 0.5); };
  if (peak <= bulk + 1 || s[size_t(peak)] <= 0) {
    p.reason = "no separate near-duplicate mode above the bulk (mode " + fixed3(centre(bulk)) +
               "); default threshold " + fixed3(fallback);
    return p;
  }
  const auto low = std::min_element(s.begin() + bulk + 1, s.begin() + peak);
  int first = int(low - s.begin()), last = first;
  for (int i = first; i < peak; ++i)
    if (s[size_t(i)] <= *low) last = i;
  if (*low >= kValleyDepth * s[size_t(peak)]) {
    p.reason = "no clear valley between the bulk (mode " + fixed3(centre(bulk)) + ") and the near-1 mode (" +
               fixed3(centre(peak)) + "); default threshold " + fixed3(fallback);
    return p;
  }
  int64_t above = 0;
  for (int i = last + 1; i < kBins; ++i) above += p.counts[size_t(i)];
  if (above < std::max<int64_t>(kMinModeItems, int64_t(kMinModeShare * double(v.size())))) {
    p.reason = "only " + std::to_string(above) + " items above the lowest point after the bulk (mode " +
               fixed3(centre(bulk)) + "), too few for a near-duplicate mode; default threshold " + fixed3(fallback);
    return p;
  }
  p.threshold = p.lo + width * (first + last + 1) / 2.0;
  p.from_valley = true;
  p.reason = "valley between the bulk of nearest-neighbour similarities (mode " + fixed3(centre(bulk)) +
             ") and the near-duplicate mode (" + fixed3(centre(peak)) + ")";
  return p;
}

}  // namespace invp::search
