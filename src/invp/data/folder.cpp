// Image folders: root/<class>/**/*.jpg is labelled by class (sorted names); any image
// directly under root makes the whole folder unlabelled, as a flat folder cannot be split.
#include <algorithm>
#include <filesystem>

#include <invp/core/error.h>
#include <invp/data/decode.h>
#include <invp/data/sources.h>

namespace fs = std::filesystem;

namespace invp::data::detail {

std::shared_ptr<Dataset> open_folder(const std::string& root, const OpenOptions& o) {
  std::vector<fs::path> rel;  // relative to root, so sorting and class names are stable
  std::error_code ec;
  const auto opts = fs::directory_options::follow_directory_symlink |
                    fs::directory_options::skip_permission_denied;
  fs::recursive_directory_iterator it(root, opts, ec), end;
  if (ec) throw Error(root, "cannot read directory", ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw Error(root, "cannot read directory", ec.message());
    const std::string name = it->path().filename().string();
    if (!name.empty() && name[0] == '.') {  // hidden files and dirs (.git, .DS_Store...)
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec) && has_image_extension(name))
      rel.push_back(it->path().lexically_relative(root));
  }
  std::sort(rel.begin(), rel.end());
  const bool labelled =
      !rel.empty() && std::all_of(rel.begin(), rel.end(), [](const fs::path& p) {
        return std::distance(p.begin(), p.end()) >= 2;
      });
  std::vector<std::string> classes;
  if (labelled) {
    for (const auto& p : rel) classes.push_back(p.begin()->string());
    std::sort(classes.begin(), classes.end());
    classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
  }
  std::vector<std::string> paths;
  std::vector<int32_t> labels;
  for (const auto& p : rel) {
    paths.push_back((fs::path(root) / p).string());
    if (labelled) {
      const auto c = std::lower_bound(classes.begin(), classes.end(), p.begin()->string());
      labels.push_back(static_cast<int32_t>(c - classes.begin()));
    }
  }
  return make_files_dataset(std::move(paths), std::move(labels), std::move(classes), "folder", o);
}

}  // namespace invp::data::detail
