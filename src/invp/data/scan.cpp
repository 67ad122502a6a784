#include <invp/data/scan.h>

#include <invp/core/error.h>
#include <invp/core/log.h>

namespace invp::data {

ScanReport scan_dataset(const Dataset& ds, bool strict, size_t max_warnings) {
  ScanReport r;
  for (size_t i = 0; i < ds.size(); ++i) {
    try {
      const Sample s = ds.get(i);
      ++r.ok;
      ++r.label_counts[s.label];
      ++r.sizes[{s.image.height, s.image.width}];
    } catch (const Error& e) {
      if (strict) throw;
      ++r.bad;
      r.bad_messages.push_back(e.what());
      if (r.bad <= max_warnings) log::warn(std::string(e.what()) + " (skipped)");
    }
  }
  if (r.bad > 0)
    log::warn(std::to_string(r.bad) + " of " + std::to_string(ds.size()) +
              " images could not be read and were skipped");
  return r;
}

}  // namespace invp::data
