#include <invp/core/error.h>
#include <invp/data/decode.h>
#include <invp/data/fetch.h>

#include <filesystem>

namespace invp::data {

Image ImageFetcher::get(const std::string& path) {
  namespace fs = std::filesystem;
  auto hash = path.rfind('#');
  if (hash != std::string::npos && !fs::exists(path)) {
    const std::string file = path.substr(0, hash), num = path.substr(hash + 1);
    if (!num.empty() && num.find_first_not_of("0123456789") == std::string::npos) {
      auto& ds = containers_[file];
      if (!ds) ds = open_dataset(file, {channels_, false});
      size_t i = std::stoull(num);
      if (i >= ds->size()) throw Error(path, "item index beyond the end of " + file);
      return ds->get(i).image;
    }
  }
  return read_image_file(path, channels_);
}

}  // namespace invp::data
