// A histogram with one marked value, drawn as a PNG (invp dedup's score distribution and the
// threshold it chose).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace invp::data {

// COUNTS are equal-width bins over [lo, hi]; bar heights are on a square-root scale so a
// small mode beside a large one stays visible. A vertical line marks `marker` (skipped when
// outside [lo, hi]) with `marker_label` beside it; the axis is labelled at both ends and at
// the marker. Written atomically; throws invp::Error(out_png, ...) when there are no bins,
// hi <= lo or the file cannot be written.
void write_histogram(const std::string& title, double lo, double hi, const std::vector<int64_t>& counts,
                     double marker, const std::string& marker_label, const std::string& out_png);

}  // namespace invp::data
