// open_dataset(): picks a reader from what SOURCE looks like on disk.
#include <invp/data/dataset.h>

#include <algorithm>
#include <filesystem>

#include <invp/core/error.h>
#include <invp/data/decode.h>
#include <invp/data/sources.h>

namespace fs = std::filesystem;

namespace invp::data {

std::shared_ptr<Dataset> open_dataset(const std::string& source, const OpenOptions& opts) {
  using detail::Split;
  if (source.empty()) throw Error("", "empty data source", "pass a file or directory");
  std::string path = source;
  Split split = Split::Train;
  // Strip a ":train"/":test" suffix, unless a file really has that name.
  for (const auto& [suffix, s] : {std::pair{std::string(":train"), Split::Train},
                                  std::pair{std::string(":test"), Split::Test}}) {
    if (path.size() > suffix.size() &&
        path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        !fs::exists(path)) {
      path.resize(path.size() - suffix.size());
      split = s;
      break;
    }
  }

  std::shared_ptr<Dataset> ds;
  if (path == "-") {
    ds = detail::open_list("-", opts);
  } else {
    std::error_code ec;
    const auto st = fs::status(path, ec);
    if (!fs::exists(st)) throw Error(path, "no such file or directory");
    if (fs::is_directory(st)) {
      if (detail::dir_has_idx(path)) ds = detail::open_idx(path, split, opts);
      else if (detail::dir_has_cifar(path)) ds = detail::open_cifar(path, split, opts);
      else ds = detail::open_folder(path, opts);
    } else if (detail::looks_like_idx(path)) {
      ds = detail::open_idx(path, split, opts);
    } else if (fs::path(path).extension() == ".bin") {
      ds = detail::open_cifar(path, split, opts);
    } else if (has_image_extension(path)) {
      ds = detail::open_single_image(path, opts);
    } else {
      ds = detail::open_list(path, opts);
    }
  }
  if (!ds || ds->size() == 0)
    throw Error(path, "no images found",
                "expected an IDX or CIFAR file, a folder of .jpg/.png/... images, or a list "
                "file with one image path per line");
  return ds;
}

std::shared_ptr<Dataset> open_files(const std::vector<std::string>& paths, const OpenOptions& opts) {
  if (paths.empty()) throw Error("", "no image files given");
  for (const auto& p : paths)
    if (!fs::exists(p)) throw Error(p, "no such file");
  return detail::make_files_dataset(paths, {}, {}, "files", opts);
}

namespace {
class SubsetDataset : public Dataset {
 public:
  SubsetDataset(std::shared_ptr<const Dataset> base, size_t start, size_t count)
      : base_(std::move(base)), start_(start), count_(count) {}
  size_t size() const override { return count_; }
  Sample get(size_t i) const override {
    Sample s = base_->get(start_ + i);
    s.index = int64_t(i);
    return s;
  }
  int channels() const override { return base_->channels(); }
  int32_t label(size_t i) const override { return base_->label(start_ + i); }
  std::vector<std::string> class_names() const override { return base_->class_names(); }
  std::string kind() const override { return base_->kind(); }

 private:
  std::shared_ptr<const Dataset> base_;
  size_t start_, count_;
};
}  // namespace

std::shared_ptr<Dataset> subset(std::shared_ptr<const Dataset> base, size_t start, size_t count) {
  if (!base) throw Error("", "subset of no data set");
  start = std::min(start, base->size());
  count = std::min(count, base->size() - start);
  return std::make_shared<SubsetDataset>(std::move(base), start, count);
}

}  // namespace invp::data
