// File lists (`path[,label]` per line) and the lazily decoding dataset shared with folder.cpp.
#include <filesystem>
#include <fstream>
#include <iostream>

#include <invp/core/error.h>
#include <invp/data/decode.h>
#include <invp/data/sources.h>

namespace fs = std::filesystem;

namespace invp::data::detail {
namespace {

class FilesDataset : public Dataset {
 public:
  FilesDataset(std::vector<std::string> paths, std::vector<int32_t> labels,
               std::vector<std::string> classes, std::string kind, const OpenOptions& o)
      : paths_(std::move(paths)), labels_(std::move(labels)), classes_(std::move(classes)),
        kind_(std::move(kind)), channels_(o.channels == 1 ? 1 : 3) {}

  size_t size() const override { return paths_.size(); }
  int channels() const override { return channels_; }
  int32_t label(size_t i) const override { return labels_.empty() ? -1 : labels_.at(i); }
  std::vector<std::string> class_names() const override { return classes_; }
  std::string kind() const override { return kind_; }

  Sample get(size_t i) const override {
    Sample s;
    s.index = static_cast<int64_t>(i);
    s.path = paths_.at(i);
    s.label = label(i);
    s.image = read_image_file(s.path, channels_);
    return s;
  }

 private:
  std::vector<std::string> paths_;
  std::vector<int32_t> labels_;
  std::vector<std::string> classes_;
  std::string kind_;
  int channels_;
};

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// Parses "LABEL" as a non-negative integer; false when it is not one.
bool parse_label(const std::string& t, int32_t& out) {
  if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos)
    return false;
  out = std::stoi(t);
  return true;
}

}  // namespace

std::shared_ptr<Dataset> make_files_dataset(std::vector<std::string> paths,
                                            std::vector<int32_t> labels,
                                            std::vector<std::string> classes, std::string kind,
                                            const OpenOptions& o) {
  return std::make_shared<FilesDataset>(std::move(paths), std::move(labels), std::move(classes),
                                        std::move(kind), o);
}

std::shared_ptr<Dataset> open_list(const std::string& list, const OpenOptions& o) {
  std::ifstream file;
  if (list != "-") {
    file.open(list);
    if (!file) throw Error(list, "cannot read file", "check that it exists and is readable");
  }
  std::istream& in = list == "-" ? std::cin : file;
  // Relative entries are relative to the list's own directory, so a list travels with data.
  const fs::path base = list == "-" ? fs::path() : fs::path(list).parent_path();
  std::vector<std::string> paths;
  std::vector<int32_t> labels;
  bool any_label = false;
  size_t lineno = 0;
  for (std::string line; std::getline(in, line);) {
    ++lineno;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    if (lineno == 1 && line.find('\0') != std::string::npos)
      throw Error(list, "not a list file", "binary data; expected `path[,label]` lines");
    std::string path = line;
    int32_t label = -1;
    // Split on the last comma only when a number follows, so paths may contain commas.
    const auto comma = line.rfind(',');
    if (comma != std::string::npos) {
      const std::string tail = trim(line.substr(comma + 1));
      if (parse_label(tail, label)) {
        path = trim(line.substr(0, comma));
        any_label = true;
      } else {
        label = -1;
      }
    }
    fs::path p(path);
    if (p.is_relative() && !base.empty()) p = base / p;
    paths.push_back(p.string());
    labels.push_back(label);
  }
  if (!any_label) labels.clear();
  return make_files_dataset(std::move(paths), std::move(labels), {}, "list", o);
}

std::shared_ptr<Dataset> open_single_image(const std::string& path, const OpenOptions& o) {
  return make_files_dataset({path}, {}, {}, "file", o);
}

}  // namespace invp::data::detail
