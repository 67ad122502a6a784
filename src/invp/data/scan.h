// Decodes every item of a data set to count good and bad files before a long job.
#pragma once
#include <cstddef>

#include <invp/data/dataset.h>

namespace invp::data {

// Decodes all items. A bad item is counted and skipped, with one log::warn line for each of
// the first MAX_WARNINGS plus a total line; STRICT rethrows the first error instead.
ScanReport scan_dataset(const Dataset& ds, bool strict, size_t max_warnings = 5);

}  // namespace invp::data
