// Augmentation preview: a montage whose rows are dataset samples, first column the
// original, then `views` augmented versions, so people see what training sees.
#pragma once
#include <invp/data/augment.h>
#include <invp/data/dataset.h>

#include <cstdint>
#include <string>

namespace invp::data {
struct PreviewOptions {
  int samples = 8;       // rows
  int views = 7;         // augmented columns per row
  int tile_px = 96;
  uint64_t seed = 0;
};
// Picks `samples` items spread evenly over the dataset (skipping bad ones) and writes out_png.
// Returns the number of rows drawn.
int write_preview(const Dataset& ds, const AugmentConfig& aug, const PreviewOptions& opt,
                  const std::string& out_png);
}  // namespace invp::data
