#include <invp/core/clock.h>
#include <invp/store/h5_io.h>
#include <invp/store/row_buffer.h>

#include <algorithm>
#include <ctime>
#include <mutex>
#include <vector>

namespace invp::store::detail {
namespace {

// HDF5 chunks of /embeddings: about 512 KiB, so one fits HDF5's default 1 MiB chunk cache.
constexpr int64_t kChunkBytes = 512 * 1024;
constexpr const char* kWriteFix = "check free disk space and permissions";

herr_t innermost(unsigned n, const H5E_error2_t* err, void* out) {
  if (n == 0 && err && err->desc) *static_cast<std::string*>(out) = err->desc;
  return 0;
}

H5::StrType utf8_vlen() {
  H5::StrType t(H5::PredType::C_S1, H5T_VARIABLE);
  t.setCset(H5T_CSET_UTF8);
  return t;
}

// Fixed-length (not vlen) so that reading metadata never goes through HDF5's global heap,
// which trusts damaged files (vlen_check.h); h5py reads these as bytes.
void put_string(H5::H5Object& at, const char* name, const std::string& value) {
  H5::StrType t(H5::PredType::C_S1, value.size() + 1);
  t.setCset(H5T_CSET_UTF8);
  t.setStrpad(H5T_STR_NULLTERM);
  H5::Attribute a = at.createAttribute(name, t, H5::DataSpace(H5S_SCALAR));
  a.write(t, value.c_str());
}

template <class T>
void put_number(H5::H5Object& at, const char* name, const H5::PredType& file_type,
                const H5::PredType& mem_type, T value) {
  H5::Attribute a = at.createAttribute(name, file_type, H5::DataSpace(H5S_SCALAR));
  a.write(mem_type, &value);
}

// Selects rows [start, start + n) of a 1-D or 2-D dataset; returns the matching memory space.
H5::DataSpace select_rows(H5::DataSpace& file_space, int64_t start, int64_t n) {
  const int rank = file_space.getSimpleExtentNdims();
  hsize_t dims[2] = {0, 0};
  file_space.getSimpleExtentDims(dims);
  hsize_t offset[2] = {hsize_t(start), 0}, count[2] = {hsize_t(n), dims[1]};
  file_space.selectHyperslab(H5S_SELECT_SET, count, offset);
  return H5::DataSpace(rank, count);
}

void write_strings(H5::DataSet& ds, const H5::DataType& type, int64_t start, const std::string* s,
                   int64_t n) {
  std::vector<const char*> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = s[i].c_str();
  H5::DataSpace fs = ds.getSpace();
  H5::DataSpace ms = select_rows(fs, start, n);
  ds.write(p.data(), type, ms, fs);
}

}  // namespace

void init_hdf5() {
  static std::once_flag once;
  std::call_once(once, [] { H5::Exception::dontPrint(); });
}

std::string hdf5_reason(const H5::Exception& e) {
  std::string why;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, &why);
  if (why.empty()) why = e.getDetailMsg();
  if (why.empty()) return "HDF5 error";
  // The I/O layer's text spans lines ("file write failed: time = …, errno = 27, error
  // message = 'File too large', …"): keep its first clause and the system's message.
  const auto msg = why.find("error message = '");
  if (msg != std::string::npos) {
    const auto start = msg + 17, end = why.find('\'', start);
    why = why.substr(0, why.find(':')) + ": " + why.substr(start, end == std::string::npos ? end : end - start);
  }
  for (char& c : why)
    if (c == '\n' || c == '\r') c = ' ';
  return why;
}


StoreFileWriter::StoreFileWriter(const std::string& path, const std::string& shown,
                                 const StoreMeta& meta, int64_t rows)
    : shown_(shown), meta_(meta), rows_(rows) {
  translate_h5(shown_, "cannot create HDF5 file", [&] {
    // The 1.10 file format: every metadata block is checksummed (see the reader).
    H5::FileAccPropList fapl;
    fapl.setLibverBounds(H5F_LIBVER_V110, H5F_LIBVER_V110);
    file_ = H5::H5File(path, H5F_ACC_TRUNC, H5::FileCreatPropList::DEFAULT, fapl);
    const hsize_t n = hsize_t(rows);
    if (meta_.with_embeddings) {
      const hsize_t d = hsize_t(meta_.dim);
      hsize_t dims[2] = {n, d}, maxdims[2] = {H5S_UNLIMITED, d};
      const int64_t per_chunk = std::clamp<int64_t>(kChunkBytes / (4 * meta_.dim), 1, std::max<int64_t>(rows, 1));
      hsize_t chunk[2] = {hsize_t(per_chunk), d};
      H5::DSetCreatPropList plist;
      plist.setChunk(2, chunk);
      emb_ = file_->createDataSet("embeddings", H5::PredType::IEEE_F32LE, H5::DataSpace(2, dims, maxdims), plist);
    }
    H5::DataSpace one(1, &n);
    ids_ = file_->createDataSet("ids", H5::PredType::STD_I64LE, one);
    paths_ = file_->createDataSet("paths", utf8_vlen(), one);
    labels_ = file_->createDataSet("labels", H5::PredType::STD_I32LE, one);

    const hsize_t c = meta_.categories.size();
    H5::DataSet cats = file_->createDataSet("categories", utf8_vlen(), H5::DataSpace(1, &c));
    if (c > 0) write_strings(cats, utf8_vlen(), 0, meta_.categories.data(), int64_t(c));

    H5::Group root = file_->openGroup("/");
    put_number<int32_t>(root, "format_version", H5::PredType::STD_I32LE, H5::PredType::NATIVE_INT32,
                        kStoreFormatVersion);
    put_number<int64_t>(root, "dim", H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64, meta_.dim);
    put_string(root, "model_hash", meta_.model_hash);
    put_string(root, "model_path", meta_.model_path);
    put_string(root, "source", meta_.source);
    put_string(root, "created", meta_.created);
    put_string(root, "precision", meta_.precision);
    put_string(root, "features", meta_.features);
    if (!meta_.shard.empty()) put_string(root, "shard", meta_.shard);
  }, kWriteFix);
}

void StoreFileWriter::write(const RowSpan& b) {
  if (b.n == 0) return;
  if (done_ + b.n > rows_) throw Error(shown_, "internal: more rows written than announced");
  if (meta_.with_embeddings && !b.embeddings) throw Error(shown_, "internal: block without embeddings");
  translate_h5(shown_, "cannot write rows", [&] {
    if (meta_.with_embeddings) {
      H5::DataSpace fs = emb_->getSpace();
      H5::DataSpace ms = select_rows(fs, done_, b.n);
      emb_->write(b.embeddings, H5::PredType::NATIVE_FLOAT, ms, fs);
    }
    H5::DataSpace fs = ids_->getSpace();
    H5::DataSpace ms = select_rows(fs, done_, b.n);
    ids_->write(b.ids, H5::PredType::NATIVE_INT64, ms, fs);
    labels_->write(b.labels, H5::PredType::NATIVE_INT32, ms, fs);
    write_strings(*paths_, utf8_vlen(), done_, b.paths, b.n);
  }, kWriteFix);
  done_ += b.n;
}

void StoreFileWriter::close() {
  if (done_ != rows_)
    throw Error(shown_, "internal: " + std::to_string(done_) + " of " + std::to_string(rows_) + " rows written");
  translate_h5(shown_, "cannot finish HDF5 file", [&] {
    emb_->close(), ids_->close(), labels_->close(), paths_->close();
    file_->close();
  }, kWriteFix);
}

}  // namespace invp::store::detail
