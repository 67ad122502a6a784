// open_dataset(): picks a reader from what SOURCE looks like on disk.
#include "invp/data/dataset.h"

#include <filesystem>

#include "invp/core/error.h"
#include "invp/data/decode.h"
#include "invp/data/sources.h"

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

}  // namespace invp::data
