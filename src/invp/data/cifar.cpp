// CIFAR-10/100 binary batches. Records are <label byte(s)><1024 R><1024 G><1024 B>: planar
// CHW in the file, turned into HWC RGB in get(). All batches are loaded once.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include <invp/core/error.h>
#include <invp/data/decode.h>
#include <invp/data/sources.h>

namespace fs = std::filesystem;

namespace invp::data::detail {
namespace {

constexpr size_t kSide = 32, kPlane = kSide * kSide, kPixels = 3 * kPlane;

bool is_test_name(const std::string& name) { return name == "test_batch.bin" || name == "test.bin"; }

// Record size (3073 = CIFAR-10, 3074 = CIFAR-100) of FILE, from its size and name.
size_t record_size(const std::string& file) {
  const auto size = fs::file_size(file);
  const std::string name = fs::path(file).filename().string();
  const bool c100_name = name == "train.bin" || name == "test.bin";  // CIFAR-100's names
  if (size > 0 && c100_name && size % 3074 == 0) return 3074;
  if (size > 0 && size % 3073 == 0) return 3073;
  if (size > 0 && size % 3074 == 0) return 3074;
  throw Error(file, "not a CIFAR binary batch",
              "size " + std::to_string(size) +
                  " is not a multiple of 3073 (CIFAR-10) or 3074 (CIFAR-100) bytes");
}

std::vector<std::string> read_names(const fs::path& file) {
  std::vector<std::string> names;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

class CifarDataset : public Dataset {
 public:
  CifarDataset(const std::vector<std::string>& files, const OpenOptions& o)
      : channels_(o.channels == 1 ? 1 : 3) {
    rec_ = record_size(files.front());
    for (const auto& f : files) {
      if (record_size(f) != rec_)
        throw Error(f, "mixes CIFAR-10 and CIFAR-100 batches with " + files.front());
      const auto bytes = read_file_bytes(f);
      const size_t n = bytes.size() / rec_;
      for (size_t i = 0; i < n; ++i) {
        const uint8_t* r = bytes.data() + i * rec_;
        labels_.push_back(r[rec_ - kPixels - 1]);  // CIFAR-100: fine label is the 2nd byte
        pixels_.insert(pixels_.end(), r + rec_ - kPixels, r + rec_);
        paths_.push_back(f + "#" + std::to_string(i));
      }
    }
    const fs::path dir = fs::path(files.front()).parent_path();
    if (rec_ == 3073) {
      classes_ = read_names(dir / "batches.meta.txt");
      if (classes_.size() != 10)
        classes_ = {"airplane", "automobile", "bird",  "cat",  "deer",
                    "dog",      "frog",       "horse", "ship", "truck"};
    } else {
      classes_ = read_names(dir / "fine_label_names.txt");
      if (classes_.size() != 100) classes_.clear();
    }
  }

  size_t size() const override { return labels_.size(); }
  int channels() const override { return channels_; }
  int32_t label(size_t i) const override { return labels_.at(i); }
  std::vector<std::string> class_names() const override { return classes_; }
  std::string kind() const override { return rec_ == 3073 ? "cifar10" : "cifar100"; }

  Sample get(size_t i) const override {
    if (i >= size()) throw Error("", "CIFAR index " + std::to_string(i) + " out of range");
    Sample s;
    s.index = static_cast<int64_t>(i);
    s.label = labels_[i];
    s.path = paths_[i];
    const uint8_t* src = pixels_.data() + i * kPixels;
    Image img;
    img.height = img.width = static_cast<int>(kSide);
    img.channels = 3;
    img.pixels.resize(kPixels);
    for (size_t p = 0; p < kPlane; ++p)
      for (size_t c = 0; c < 3; ++c) img.pixels[p * 3 + c] = src[c * kPlane + p];
    s.image = convert_channels(std::move(img), channels_);
    return s;
  }

 private:
  int channels_;
  size_t rec_ = 3073;
  std::vector<uint8_t> pixels_;  // planar CHW per record, labels stripped
  std::vector<int32_t> labels_;
  std::vector<std::string> paths_;
  std::vector<std::string> classes_;
};

std::vector<std::string> bin_files(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().extension() == ".bin") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

bool dir_has_cifar(const std::string& dir) { return !bin_files(dir).empty(); }

std::shared_ptr<Dataset> open_cifar(const std::string& path, Split split, const OpenOptions& o) {
  std::vector<std::string> files;
  if (fs::is_directory(path)) {
    // test_batch.bin / test.bin form the test split; every other batch is training data.
    for (const auto& f : bin_files(path))
      if (is_test_name(fs::path(f).filename().string()) == (split == Split::Test))
        files.push_back(f);
    if (files.empty()) return nullptr;  // open_dataset reports "no images found"
  } else {
    files.push_back(path);
  }
  return std::make_shared<CifarDataset>(files, o);
}

}  // namespace invp::data::detail
