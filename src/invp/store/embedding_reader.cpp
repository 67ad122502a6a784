// EmbeddingReader: opens embeddings.h5 / meta.h5, validates the layout, reads row blocks.
#include <invp/core/error.h>
#include <invp/store/embedding_store.h>
#include <invp/store/h5_io.h>
#include <invp/store/row_buffer.h>
#include <invp/store/vlen_check.h>

#include <ATen/ATen.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

namespace fs = std::filesystem;

namespace invp::store {
namespace {

constexpr const char* kFix = "give a file written by invp embed, or embed again";
constexpr const char* kDamaged = "the file may be truncated or damaged; embed again";
constexpr size_t kMaxFixedString = size_t(1) << 16;

struct Extent {
  int rank = 0;
  hsize_t dims[2] = {0, 0};
};

Extent extent_of(const H5::DataSet& ds) {
  H5::DataSpace s = ds.getSpace();
  Extent e;
  if (!s.isSimple()) return e;
  e.rank = s.getSimpleExtentNdims();
  if (e.rank >= 1 && e.rank <= 2) s.getSimpleExtentDims(e.dims);
  return e;
}

// Selects rows [start, start + n) of a 1-D or 2-D dataset; returns the matching memory space.
H5::DataSpace select(const H5::DataSet& ds, H5::DataSpace& fs, int64_t start, int64_t n) {
  fs = ds.getSpace();
  const Extent e = extent_of(ds);
  hsize_t offset[2] = {hsize_t(start), 0}, count[2] = {hsize_t(n), e.dims[1]};
  fs.selectHyperslab(H5S_SELECT_SET, count, offset);
  return H5::DataSpace(e.rank, count);
}

std::vector<std::string> read_strings(const H5::DataSet& ds, const char* name, detail::VlenGuard& guard,
                                      int64_t start, int64_t n) {
  if (n == 0) return {};
  H5::StrType ft = ds.getStrType();
  if (ft.isVariableStr()) guard.check(ds.getId(), name, start, n);  // before any allocation
  std::vector<std::string> out(static_cast<size_t>(n));
  H5::DataSpace fs;
  H5::DataSpace ms = select(ds, fs, start, n);
  if (ft.isVariableStr()) {
    H5::StrType mt(H5::PredType::C_S1, H5T_VARIABLE);
    mt.setCset(ft.getCset());
    std::vector<char*> p(out.size(), nullptr);
    struct Reclaim {  // frees what HDF5 allocated, also when the read throws half-way
      hid_t t, s;
      std::vector<char*>& p;
      ~Reclaim() { H5Dvlen_reclaim(t, s, H5P_DEFAULT, p.data()); }
    } reclaim{mt.getId(), ms.getId(), p};
    ds.read(p.data(), mt, ms, fs);
    for (size_t i = 0; i < p.size(); ++i)
      if (p[i]) out[i] = p[i];
  } else {
    const size_t w = ft.getSize();
    H5::StrType mt(H5::PredType::C_S1, w);
    mt.setCset(ft.getCset());
    std::vector<char> buf(out.size() * w);
    ds.read(buf.data(), mt, ms, fs);
    for (size_t i = 0; i < out.size(); ++i) {
      const char* s = buf.data() + i * w;
      size_t len = 0;
      while (len < w && s[len]) ++len;
      out[i].assign(s, len);
    }
  }
  return out;
}

// HDF5 1.10.8 parses damaged object headers out of bounds (ASan: H5Aexists on a mutated
// file read past its buffer). invp writes its files with the 1.10 format (superblock v3,
// version-2 object headers, new chunk indexes), whose metadata carry checksums that HDF5
// verifies before parsing. So a file is only handed to HDF5 when its superblock is one of
// those; older, checksum-free layouts (superblock 0/1, as written by default settings) are
// refused with a message, since their damage could not be detected.
void require_checksummed_superblock(const std::string& path) {
  static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "cannot open");
  f.seekg(0, std::ios::end);
  const uint64_t size = uint64_t(f.tellg());
  // The superblock sits at 0 or after a user block of 512, 1024, 2048, ... bytes.
  for (uint64_t at = 0; at + 9 <= size; at = at ? at * 2 : 512) {
    unsigned char b[9];
    f.seekg(std::streamoff(at));
    if (!f.read(reinterpret_cast<char*>(b), 9)) break;
    if (std::equal(sig, sig + 8, b)) {
      if (b[8] >= 2 && b[8] <= 3) return;
      throw Error(path, "HDF5 file without metadata checksums (superblock version " + std::to_string(b[8]) +
                            "), so damage could not be detected",
                  "invp reads the files it writes itself (HDF5 1.10 format); embed again");
    }
  }
  throw Error(path, "not an HDF5 file (no superblock signature)", kFix);
}

}  // namespace

struct EmbeddingReader::Impl {
  std::string path;
  H5::H5File file;
  H5::DataSet emb, ids, labels, paths;
  detail::VlenGuard guard;
  bool has_emb = false;
  int64_t n = 0;
  StoreMeta meta;

  [[noreturn]] void bad(const std::string& problem) const { throw Error(path, problem, kFix); }
  H5::DataSet dataset(const char* name, H5T_class_t cls, int rank, bool required);
  void check_storage(const H5::DataSet& ds, const char* name, uint64_t elements) const;
  std::string string_attr(const char* name) const;
  int64_t int_attr(const char* name, bool required) const;
  void open();
};

H5::DataSet EmbeddingReader::Impl::dataset(const char* name, H5T_class_t cls, int rank, bool required) {
  if (!file.nameExists(name) || file.childObjType(name) != H5O_TYPE_DATASET) {
    if (required) bad(std::string("missing dataset /") + name);
    return H5::DataSet();
  }
  H5::DataSet ds = file.openDataSet(name);
  const Extent e = extent_of(ds);
  if (e.rank != rank) bad("/" + std::string(name) + " must have " + std::to_string(rank) + " dimension(s)");
  if (ds.getTypeClass() != cls) bad("/" + std::string(name) + " has the wrong element type");
  if (cls == H5T_INTEGER && ds.getIntType().getSize() > 8) bad("/" + std::string(name) + " has oversized integers");
  if (e.dims[0] > hsize_t(detail::kMaxRows)) bad("/" + std::string(name) + " claims too many rows");
  if (cls == H5T_STRING && !ds.getStrType().isVariableStr() && ds.getStrType().getSize() > kMaxFixedString)
    bad("/" + std::string(name) + " has oversized fixed-length strings");
  return ds;
}

// The stored bytes must cover the extent (unless compressed), so a damaged extent cannot make
// read_all() allocate far more than the file holds; data in other files is refused.
void EmbeddingReader::Impl::check_storage(const H5::DataSet& ds, const char* name, uint64_t elements) const {
  const std::string what = std::string("/") + name;
  H5::DSetCreatPropList dcpl = ds.getCreatePlist();
  const H5D_layout_t layout = dcpl.getLayout();
  if (layout == H5D_VIRTUAL || dcpl.getExternalCount() > 0) bad(what + " keeps its data in other files");
  if (elements == 0 || layout == H5D_COMPACT) return;
  const hsize_t stored = ds.getStorageSize();
  const bool filtered = layout == H5D_CHUNKED && dcpl.getNfilters() > 0;
  H5::DataType t = ds.getDataType();
  const uint64_t element_size =
      t.getClass() == H5T_STRING && ds.getStrType().isVariableStr() ? guard.vlen_disk_size() : t.getSize();
  if (stored > guard.file_size() || (filtered ? stored == 0 : stored / element_size < elements))
    throw Error(path, what + " holds fewer stored bytes than its extent needs", kDamaged);
}

std::string EmbeddingReader::Impl::string_attr(const char* name) const {
  if (!file.attrExists(name)) return "";
  H5::Attribute a = file.openAttribute(name);
  if (a.getTypeClass() != H5T_STRING || a.getSpace().getSimpleExtentNpoints() != 1)
    bad(std::string("attribute ") + name + " must be one string");
  H5::StrType t = a.getStrType();
  if (!t.isVariableStr() && t.getSize() > kMaxFixedString) bad(std::string("attribute ") + name + " is oversized");
  std::string s;
  a.read(t, s);
  return s;
}

int64_t EmbeddingReader::Impl::int_attr(const char* name, bool required) const {
  if (!file.attrExists(name)) {
    if (required) bad(std::string("missing attribute ") + name);
    return 0;
  }
  H5::Attribute a = file.openAttribute(name);
  if (a.getTypeClass() != H5T_INTEGER || a.getSpace().getSimpleExtentNpoints() != 1)
    bad(std::string("attribute ") + name + " must be one integer");
  if (a.getIntType().getSize() > 8) bad(std::string("attribute ") + name + " has an oversized integer");
  int64_t v = 0;
  a.read(H5::PredType::NATIVE_INT64, &v);
  return v;
}

void EmbeddingReader::Impl::open() {
  require_checksummed_superblock(path);
  file = H5::H5File(path, H5F_ACC_RDONLY);
  guard.open(path, file.getId());
  if (file.attrExists("format_version")) {
    const int64_t v = int_attr("format_version", true);
    if (v < 1 || v > kStoreFormatVersion)
      throw Error(path, "store format version " + std::to_string(v) + " is not supported (this invp reads " +
                            std::to_string(kStoreFormatVersion) + ")", "update invp or embed again");
  }
  meta.dim = int_attr("dim", true);
  if (meta.dim < 0 || meta.dim > detail::kMaxDim) bad("attribute dim out of range: " + std::to_string(meta.dim));
  meta.model_hash = string_attr("model_hash");
  meta.model_path = string_attr("model_path");
  meta.source = string_attr("source");
  meta.created = string_attr("created");
  meta.precision = string_attr("precision");
  if (meta.precision.empty()) meta.precision = "fp32";  // written before the attribute existed
  meta.shard = string_attr("shard");
  meta.features = string_attr("features");
  if (meta.features.empty()) meta.features = "head";  // written before the attribute existed

  ids = dataset("ids", H5T_INTEGER, 1, true);
  labels = dataset("labels", H5T_INTEGER, 1, true);
  paths = dataset("paths", H5T_STRING, 1, true);
  n = int64_t(extent_of(ids).dims[0]);
  for (auto [ds, name] : {std::pair{&labels, "/labels"}, std::pair{&paths, "/paths"}})
    if (int64_t(extent_of(*ds).dims[0]) != n)
      bad(std::string(name) + " has " + std::to_string(extent_of(*ds).dims[0]) + " entries but /ids has " +
          std::to_string(n));
  check_storage(ids, "ids", uint64_t(n));
  check_storage(labels, "labels", uint64_t(n));
  check_storage(paths, "paths", uint64_t(n));

  emb = dataset("embeddings", H5T_FLOAT, 2, false);
  has_emb = emb.getId() > 0;
  if (has_emb) {
    const Extent e = extent_of(emb);
    if (emb.getFloatType().getSize() != 4) bad("/embeddings must be float32");
    if (int64_t(e.dims[0]) != n)
      bad("/embeddings has " + std::to_string(e.dims[0]) + " rows but /ids has " + std::to_string(n));
    if (int64_t(e.dims[1]) != meta.dim)
      bad("/embeddings has " + std::to_string(e.dims[1]) + " columns but attribute dim is " +
          std::to_string(meta.dim));
    if (meta.dim < 1) bad("/embeddings has no columns");
    check_storage(emb, "embeddings", uint64_t(n) * uint64_t(meta.dim));
  }
  meta.with_embeddings = has_emb;

  H5::DataSet cats = dataset("categories", H5T_STRING, 1, false);
  if (cats.getId() > 0) {
    const int64_t c = int64_t(extent_of(cats).dims[0]);
    if (c > (int64_t(1) << 20)) bad("/categories claims too many entries");
    check_storage(cats, "categories", uint64_t(c));
    meta.categories = read_strings(cats, "categories", guard, 0, c);
  }
}

EmbeddingReader::EmbeddingReader(const std::string& path) : impl_(new Impl) {
  std::unique_ptr<Impl> guard(impl_);
  detail::init_hdf5();
  impl_->path = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path, "no such file", "check the path");
  if (fs::is_directory(path, ec)) throw Error(path, "is a directory, not an HDF5 file", kFix);
  if (const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    ::close(fd);
  } else {
    const int e = errno;
    throw Error(path, std::string("cannot open for reading: ") + std::strerror(e),
                e == EMFILE || e == ENFILE ? "raise the open-file limit (ulimit -n)" : "check its permissions");
  }
  if (H5Fis_hdf5(path.c_str()) <= 0) throw Error(path, "not an HDF5 file", kFix);
  detail::translate_h5(path, "cannot read HDF5 file", [&] { impl_->open(); }, kDamaged);
  guard.release();
}

EmbeddingReader::~EmbeddingReader() { delete impl_; }

int64_t EmbeddingReader::size() const { return impl_->n; }
int64_t EmbeddingReader::dim() const { return impl_->meta.dim; }
bool EmbeddingReader::has_embeddings() const { return impl_->has_emb; }
const StoreMeta& EmbeddingReader::meta() const { return impl_->meta; }

Rows EmbeddingReader::read(int64_t start, int64_t count, bool with_embeddings) const {
  Impl& r = *impl_;
  if (start < 0 || count < 0 || start > r.n || count > r.n - start)
    throw Error(r.path, "rows [" + std::to_string(start) + ", " + std::to_string(start + count) +
                            ") out of range: the file holds " + std::to_string(r.n));
  Rows out;
  const bool want_emb = with_embeddings && r.has_emb;
  if (want_emb) out.embeddings = at::empty({count, r.meta.dim}, at::kFloat);
  out.ids.resize(size_t(count));
  out.labels.resize(size_t(count));
  if (count == 0) return out;
  detail::translate_h5(r.path, "cannot read rows " + std::to_string(start) + "+" + std::to_string(count), [&] {
    H5::DataSpace fs;
    if (want_emb) {
      H5::DataSpace ms = select(r.emb, fs, start, count);
      r.emb.read(out.embeddings.data_ptr<float>(), H5::PredType::NATIVE_FLOAT, ms, fs);
    }
    H5::DataSpace ms = select(r.ids, fs, start, count);
    r.ids.read(out.ids.data(), H5::PredType::NATIVE_INT64, ms, fs);
    ms = select(r.labels, fs, start, count);
    r.labels.read(out.labels.data(), H5::PredType::NATIVE_INT32, ms, fs);
    out.paths = read_strings(r.paths, "paths", r.guard, start, count);
  }, kDamaged);
  return out;
}

at::Tensor EmbeddingReader::read_embeddings(const std::vector<int64_t>& rows) const {
  Impl& r = *impl_;
  if (!r.has_emb) throw Error(r.path, "holds no /embeddings", "build the index with its embeddings");
  at::Tensor out = at::empty({int64_t(rows.size()), r.meta.dim}, at::kFloat);
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i] < 0 || rows[i] >= r.n || (i > 0 && rows[i] <= rows[i - 1]))
      throw Error(r.path, "rows to read must be ascending and within the file");
  detail::translate_h5(r.path, "cannot read embeddings", [&] {
    for (size_t i = 0; i < rows.size();) {
      size_t j = i + 1;
      while (j < rows.size() && rows[j] == rows[j - 1] + 1) ++j;
      H5::DataSpace fs;
      H5::DataSpace ms = select(r.emb, fs, rows[i], int64_t(j - i));
      r.emb.read(out[int64_t(i)].data_ptr<float>(), H5::PredType::NATIVE_FLOAT, ms, fs);
      i = j;
    }
  }, kDamaged);
  return out;
}

}  // namespace invp::store
