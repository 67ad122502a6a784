// Named distortions of an image, the kind a copy of a picture goes through on its way around:
// a crop, a loss of resolution, JPEG re-encoding, a colour change, a mirror image. Used to ask
// whether an embedding finds an image again from a distorted copy of itself (search/copy_check.h)
// and to make near-duplicate test sets (bench/bench_dedup.cpp). Every draw comes from the
// caller's generator, so a seed gives the same copies.
#pragma once
#include <invp/data/dataset.h>

#include <random>
#include <string>
#include <vector>

namespace invp::data {

enum class Distortion {
  crop,    // keep 70-90 % of each side at a random place, resized back to the original size
  scale,   // down to 35-50 % of each side and back up (detail lost, blur)
  jpeg,    // JPEG re-encoding at quality 20-50
  colour,  // brightness and contrast shifted; colour images also get a tint per channel
  flip,    // left-right mirror image
  mixed,   // two to four of the above, in that order
};

// "crop", "scale", "jpeg", "colour", "flip", "mixed"; anything else throws invp::Error listing them.
Distortion distortion_named(const std::string& name);
std::string distortion_name(Distortion d);
std::vector<Distortion> all_distortions();

// A distorted copy of IMG (same size and channel count).
Image distort(const Image& img, Distortion d, std::mt19937_64& rng);

}  // namespace invp::data
