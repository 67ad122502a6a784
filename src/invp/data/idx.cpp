// IDX reader (MNIST, Fashion-MNIST): the whole split is loaded once, so get() is a copy.
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include <invp/core/error.h>
#include <invp/data/decode.h>
#include <invp/data/sources.h>

namespace fs = std::filesystem;

namespace invp::data::detail {
namespace {

// Reads a gzip or raw file (gzread passes raw data through unchanged).
std::vector<uint8_t> read_maybe_gz(const std::string& path, size_t limit = SIZE_MAX) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw Error(path, "cannot read file", "check that it exists and is readable");
  std::vector<uint8_t> out;
  std::vector<uint8_t> chunk(1 << 20);
  while (out.size() < limit) {
    const int n = gzread(f, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n <= 0) break;
    out.insert(out.end(), chunk.begin(), chunk.begin() + n);
  }
  int err = Z_OK;
  const char* msg = gzerror(f, &err);
  const std::string why = msg ? msg : "";
  gzclose(f);
  // A truncated gzip stream reports Z_BUF_ERROR; the data read so far cannot be trusted.
  if (out.size() < limit && err != Z_OK && err != Z_STREAM_END)
    throw Error(path, "corrupt gzip data", why.empty() ? "re-download the file" : why);
  if (out.size() > limit) out.resize(limit);
  return out;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

struct IdxFile {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> bytes;  // whole file; data starts at `offset`
  size_t offset = 0;
};

// Parses and validates an unsigned-byte IDX file with WANT_DIMS dimensions.
IdxFile load_idx(const std::string& path, size_t want_dims) {
  IdxFile f;
  f.bytes = read_maybe_gz(path);
  const auto& b = f.bytes;
  if (b.size() < 4 || b[0] != 0 || b[1] != 0 || b[2] != 0x08)
    throw Error(path, "not an unsigned-byte IDX file", "bad magic number");
  if (b[3] != want_dims)
    throw Error(path, "IDX file has " + std::to_string(b[3]) + " dimensions, expected " +
                          std::to_string(want_dims),
                want_dims == 3 ? "pass the images file, not the labels" : "");
  f.offset = 4 + 4 * want_dims;
  if (b.size() < f.offset) throw Error(path, "IDX header is truncated");
  size_t expect = 1;
  for (size_t i = 0; i < want_dims; ++i) {
    f.dims.push_back(be32(&b[4 + 4 * i]));
    expect *= f.dims.back();
  }
  if (b.size() - f.offset != expect)
    throw Error(path, "file size does not match its IDX header",
                "expected " + std::to_string(expect) + " data bytes, found " +
                    std::to_string(b.size() - f.offset) + "; the file may be truncated");
  return f;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// The images file of the split in DIR, gzipped or not, or "" if absent.
std::string find_in_dir(const std::string& dir, const std::string& stem) {
  for (const char* ext : {"", ".gz"}) {
    const fs::path p = fs::path(dir) / (stem + ext);
    if (fs::is_regular_file(p)) return p.string();
  }
  return "";
}

// The labels file that pairs with IMAGES ("...images-idx3..." -> "...labels-idx1..."), or "".
std::string labels_for(const std::string& images) {
  const fs::path p(images);
  std::string name = p.filename().string();
  const auto pos = name.find("images-idx3");
  if (pos == std::string::npos) return "";
  name.replace(pos, 11, "labels-idx1");
  std::string base = name;
  if (base.size() > 3 && base.compare(base.size() - 3, 3, ".gz") == 0)
    base.resize(base.size() - 3);
  for (const std::string& cand : {base, base + ".gz"}) {
    const fs::path q = p.parent_path() / cand;
    if (fs::is_regular_file(q)) return q.string();
  }
  return "";
}

class IdxDataset : public Dataset {
 public:
  IdxDataset(const std::string& images, const OpenOptions& o)
      : path_(images), channels_(o.channels == 3 ? 3 : 1) {
    IdxFile img = load_idx(images, 3);
    n_ = img.dims[0];
    h_ = static_cast<int>(img.dims[1]);
    w_ = static_cast<int>(img.dims[2]);
    pixels_.assign(img.bytes.begin() + img.offset, img.bytes.end());
    const std::string lp = labels_for(images);
    if (!lp.empty()) {
      IdxFile lab = load_idx(lp, 1);
      if (lab.dims[0] != n_)
        throw Error(lp, "label count " + std::to_string(lab.dims[0]) +
                            " does not match image count " + std::to_string(n_),
                    "the images and labels files are from different splits");
      labels_.reserve(n_);
      for (size_t i = 0; i < n_; ++i) labels_.push_back(lab.bytes[lab.offset + i]);
    }
    if (lower(images).find("fashion") != std::string::npos)
      classes_ = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    else
      for (int d = 0; d < 10; ++d) classes_.push_back(std::to_string(d));
  }

  size_t size() const override { return n_; }
  int channels() const override { return channels_; }
  int32_t label(size_t i) const override { return labels_.empty() ? -1 : labels_.at(i); }
  std::vector<std::string> class_names() const override {
    return labels_.empty() ? std::vector<std::string>{} : classes_;
  }
  std::string kind() const override { return "idx"; }

  Sample get(size_t i) const override {
    if (i >= n_) throw Error(path_, "index " + std::to_string(i) + " out of range");
    Sample s;
    s.index = static_cast<int64_t>(i);
    s.label = label(i);
    s.path = path_ + "#" + std::to_string(i);
    const size_t plane = static_cast<size_t>(h_) * w_;
    s.image = convert_channels(to_image(pixels_.data() + i * plane, h_, w_, 1), channels_);
    return s;
  }

 private:
  std::string path_;
  int channels_;
  size_t n_ = 0;
  int h_ = 0, w_ = 0;
  std::vector<uint8_t> pixels_;
  std::vector<int32_t> labels_;
  std::vector<std::string> classes_;
};

}  // namespace

bool looks_like_idx(const std::string& path) {
  try {
    const auto b = read_maybe_gz(path, 4);
    return b.size() == 4 && b[0] == 0 && b[1] == 0 && b[2] == 0x08 && b[3] >= 1 && b[3] <= 4;
  } catch (const Error&) {
    return false;
  }
}

bool dir_has_idx(const std::string& dir) {
  return !find_in_dir(dir, "train-images-idx3-ubyte").empty() ||
         !find_in_dir(dir, "t10k-images-idx3-ubyte").empty();
}

std::shared_ptr<Dataset> open_idx(const std::string& images, Split split, const OpenOptions& o) {
  std::string file = images;
  if (fs::is_directory(images)) {
    const char* stem = split == Split::Test ? "t10k-images-idx3-ubyte" : "train-images-idx3-ubyte";
    file = find_in_dir(images, stem);
    if (file.empty())
      throw Error(images, std::string("no ") + stem + "[.gz] in this directory",
                  split == Split::Test ? "use :train for the training split"
                                       : "use :test for the test split");
  }
  return std::make_shared<IdxDataset>(file, o);
}

}  // namespace invp::data::detail
