// Datasets: a random-access view of an image collection.
// Conventions: images are 8-bit, row-major HWC (interleaved channels), RGB order for
// 3 channels; `channels` is 1 or 3. Labels are 0..C-1, or -1 when unknown. Indices are
// 0..size()-1 in a stable source order. get() is thread-safe (loader workers call it).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace invp::data {

struct Image {
  int height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels bytes, HWC
  bool empty() const { return pixels.empty(); }
};

struct Sample {
  int64_t index = 0;
  Image image;
  int32_t label = -1;
  std::string path;  // file path, or "<file>#<index>" for items inside a container file
};

struct OpenOptions {
  int channels = 0;      // 0 = the source's natural count (1 for IDX, 3 otherwise)
  bool strict = false;   // first bad file throws instead of being skipped
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  // Decodes item i. Throws invp::Error naming the file for a bad item.
  virtual Sample get(size_t i) const = 0;
  virtual int channels() const = 0;
  // Label of item i without decoding (-1 if unlabelled).
  virtual int32_t label(size_t i) const = 0;
  // Category names indexed by label; empty if unknown.
  virtual std::vector<std::string> class_names() const { return {}; }
  // Short description of the format ("idx", "cifar10", "folder", "list").
  virtual std::string kind() const = 0;
};

// Opens SOURCE, auto-detected: IDX file or directory (with ":train"/":test" suffix to pick
// a split), CIFAR *.bin batches (file or directory), image folder, list file, "-" (stdin).
// Throws invp::Error for a missing/unknown source or one that yields no image.
std::shared_ptr<Dataset> open_dataset(const std::string& source, const OpenOptions& opts = {});

// Image files given one by one (query images), decoded lazily, unlabelled. Missing files
// throw invp::Error naming the path at once; undecodable ones when get() reaches them.
std::shared_ptr<Dataset> open_files(const std::vector<std::string>& paths, const OpenOptions& opts = {});

// Items [start, start+count) of BASE as a data set of its own (indices renumbered from 0;
// paths, labels and class names kept). count is clamped to what BASE has after start.
std::shared_ptr<Dataset> subset(std::shared_ptr<const Dataset> base, size_t start, size_t count);

// What scan_dataset() (scan.h) found after decoding every item.
struct ScanReport {
  size_t ok = 0, bad = 0;
  std::vector<std::string> bad_messages;         // one per bad item, in index order
  std::map<int32_t, size_t> label_counts;        // label -> items (good items only)
  std::map<std::pair<int, int>, size_t> sizes;   // (height, width) -> items
};

}  // namespace invp::data
