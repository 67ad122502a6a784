// write_store / EmbeddingReader: round trip, plain HDF5 types, metadata-only files, errors.
#include <invp/core/error.h>
#include <invp/store/embedding_store.h>
#include <invp/store/vlen_check.h>

#if __has_include(<hdf5.h>)
#include <hdf5.h>
#else
#include <hdf5/serial/hdf5.h>  // Debian keeps the serial build here
#endif

#include <fstream>
#include <regex>

#include "store_test_util.h"

using namespace invp::store;
using namespace invp::store::test;

namespace {

// The raw C API, as any other HDF5 program would see the file.
struct H5Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~H5Handle() {
    if (id >= 0) close(id);
  }
};

void expect_int_dataset(hid_t f, const char* name, size_t bytes, hsize_t n) {
  H5Handle d{H5Dopen2(f, name, H5P_DEFAULT), H5Dclose};
  ASSERT_GE(d.id, 0) << name;
  H5Handle t{H5Dget_type(d.id), H5Tclose};
  EXPECT_EQ(H5Tget_class(t.id), H5T_INTEGER) << name;
  EXPECT_EQ(H5Tget_size(t.id), bytes) << name;
  EXPECT_EQ(H5Tget_sign(t.id), H5T_SGN_2) << name;
  EXPECT_EQ(H5Tget_order(t.id), H5T_ORDER_LE) << name;
  H5Handle s{H5Dget_space(d.id), H5Sclose};
  hsize_t dims[1] = {0};
  EXPECT_EQ(H5Sget_simple_extent_ndims(s.id), 1);
  H5Sget_simple_extent_dims(s.id, dims, nullptr);
  EXPECT_EQ(dims[0], n) << name;
}

std::vector<std::string> read_vlen_strings(hid_t f, const char* name) {
  H5Handle d{H5Dopen2(f, name, H5P_DEFAULT), H5Dclose};
  EXPECT_GE(d.id, 0) << name;
  H5Handle t{H5Dget_type(d.id), H5Tclose};
  EXPECT_EQ(H5Tget_class(t.id), H5T_STRING) << name;
  EXPECT_GT(H5Tis_variable_str(t.id), 0) << name;
  EXPECT_EQ(H5Tget_cset(t.id), H5T_CSET_UTF8) << name;
  H5Handle s{H5Dget_space(d.id), H5Sclose};
  std::vector<char*> p(size_t(H5Sget_simple_extent_npoints(s.id)), nullptr);
  H5Handle mt{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(mt.id, H5T_VARIABLE);
  H5Tset_cset(mt.id, H5T_CSET_UTF8);
  EXPECT_GE(H5Dread(d.id, mt.id, H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data()), 0);
  std::vector<std::string> out(p.begin(), p.end());
  H5Dvlen_reclaim(mt.id, s.id, H5P_DEFAULT, p.data());
  return out;
}

// String attributes are fixed-length UTF-8 (see embedding_store.h for why).
std::string string_attr(hid_t f, const char* name) {
  H5Handle a{H5Aopen(f, name, H5P_DEFAULT), H5Aclose};
  EXPECT_GE(a.id, 0) << name;
  H5Handle t{H5Aget_type(a.id), H5Tclose};
  EXPECT_EQ(H5Tget_class(t.id), H5T_STRING) << name;
  EXPECT_EQ(H5Tis_variable_str(t.id), 0) << name;
  EXPECT_EQ(H5Tget_cset(t.id), H5T_CSET_UTF8) << name;
  std::string buf(H5Tget_size(t.id), '\0');
  EXPECT_GE(H5Aread(a.id, t.id, buf.data()), 0);
  return buf.substr(0, buf.find('\0'));
}

// Runs f and checks it throws invp::Error whose message names `file` and contains `what`.
template <class F>
void expect_error(F&& f, const std::string& file, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error for " << file;
  } catch (const invp::Error& e) {
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

// Opens an HDF5 file read-write with the C API and runs f on it (to damage it on purpose).
template <class F>
void edit_file(const std::string& path, F&& f) {
  H5Handle file{H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose};
  ASSERT_GE(file.id, 0);
  f(file.id);
}

}  // namespace

TEST(Store, RoundTripKeepsValuesIdsUnicodePathsLabelsAndAttributes) {
  auto dir = temp_dir("roundtrip");
  auto rows = make_rows(0, 23, 12);
  auto meta = make_meta(12);
  meta.created = "2024-01-02T03:04:05Z";
  meta.precision = "bf16";
  auto path = (dir / "e mb é.h5").string();
  write_store(path, meta, rows);

  EmbeddingReader r(path);
  EXPECT_EQ(r.size(), 23);
  EXPECT_EQ(r.dim(), 12);
  EXPECT_TRUE(r.has_embeddings());
  EXPECT_EQ(r.meta().model_hash, meta.model_hash);
  EXPECT_EQ(r.meta().model_path, meta.model_path);
  EXPECT_EQ(r.meta().source, meta.source);
  EXPECT_EQ(r.meta().created, meta.created);
  EXPECT_EQ(r.meta().precision, "bf16");
  EXPECT_EQ(r.meta().categories, meta.categories);
  EXPECT_TRUE(r.meta().with_embeddings);
  auto all = r.read_all();
  EXPECT_TRUE(at::equal(all.embeddings, rows.embeddings));
  EXPECT_EQ(all.ids, rows.ids);
  EXPECT_EQ(all.labels, rows.labels);
  EXPECT_EQ(all.labels[4], -1);
  EXPECT_EQ(all.paths, rows.paths);
  EXPECT_NE(all.paths[3].find("猫 3"), std::string::npos);

  auto part = r.read(5, 7);
  EXPECT_TRUE(at::equal(part.embeddings, rows.embeddings.narrow(0, 5, 7)));
  EXPECT_EQ(part.ids.front(), 5);
  EXPECT_EQ(part.paths.back(), rows.paths[11]);
  auto meta_only = r.read(20, 3, false);
  EXPECT_FALSE(meta_only.embeddings.defined());
  EXPECT_EQ(meta_only.labels, std::vector<int32_t>(rows.labels.begin() + 20, rows.labels.end()));
  EXPECT_EQ(r.read(23, 0).size(), 0);
  expect_error([&] { r.read(20, 4); }, path, "out of range");
  expect_error([&] { r.read(-1, 1); }, path, "out of range");

  // `created` is filled in when empty (ISO-8601 UTC).
  meta.created.clear();
  write_store(path, meta, rows);
  EXPECT_TRUE(std::regex_match(EmbeddingReader(path).meta().created,
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  fs::remove_all(dir);
}

TEST(Store, DatasetsArePlainNativeTypesForAnyHdf5Reader) {
  auto dir = temp_dir("ctypes");
  auto rows = make_rows(0, 9, 6);
  auto path = (dir / "e.h5").string();
  write_store(path, make_meta(6), rows);

  H5Handle f{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  ASSERT_GE(f.id, 0);
  {
    H5Handle d{H5Dopen2(f.id, "embeddings", H5P_DEFAULT), H5Dclose};
    ASSERT_GE(d.id, 0);
    H5Handle t{H5Dget_type(d.id), H5Tclose};
    EXPECT_EQ(H5Tequal(t.id, H5T_IEEE_F32LE), 1);
    H5Handle s{H5Dget_space(d.id), H5Sclose};
    hsize_t dims[2];
    ASSERT_EQ(H5Sget_simple_extent_ndims(s.id), 2);
    H5Sget_simple_extent_dims(s.id, dims, nullptr);
    EXPECT_EQ(dims[0], 9u);
    EXPECT_EQ(dims[1], 6u);
    H5Handle pl{H5Dget_create_plist(d.id), H5Pclose};
    EXPECT_EQ(H5Pget_layout(pl.id), H5D_CHUNKED);
    EXPECT_EQ(H5Pget_nfilters(pl.id), 0);
    std::vector<float> v(54);
    ASSERT_GE(H5Dread(d.id, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), 0);
    EXPECT_EQ(v[6 * 4 + 5], rows.embeddings[4][5].item<float>());
  }
  expect_int_dataset(f.id, "ids", 8, 9);
  expect_int_dataset(f.id, "labels", 4, 9);
  {
    H5Handle d{H5Dopen2(f.id, "ids", H5P_DEFAULT), H5Dclose};
    std::vector<int64_t> ids(9);
    H5Dread(d.id, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids.data());
    EXPECT_EQ(ids, rows.ids);
  }
  EXPECT_EQ(read_vlen_strings(f.id, "paths"), rows.paths);
  EXPECT_EQ(read_vlen_strings(f.id, "categories"), make_meta(6).categories);
  EXPECT_EQ(string_attr(f.id, "model_hash"), "0123456789abcdef");
  EXPECT_EQ(string_attr(f.id, "source"), make_meta(6).source);
  EXPECT_EQ(string_attr(f.id, "precision"), "fp32");
  {
    H5Handle a{H5Aopen(f.id, "dim", H5P_DEFAULT), H5Aclose};
    int64_t dim = 0;
    ASSERT_GE(H5Aread(a.id, H5T_NATIVE_INT64, &dim), 0);
    EXPECT_EQ(dim, 6);
    H5Handle v{H5Aopen(f.id, "format_version", H5P_DEFAULT), H5Aclose};
    int32_t version = 0;
    ASSERT_GE(H5Aread(v.id, H5T_NATIVE_INT32, &version), 0);
    EXPECT_EQ(version, kStoreFormatVersion);
  }
  fs::remove_all(dir);
}

TEST(Store, FileWithoutPrecisionAttributeReadsAsFp32) {
  auto dir = temp_dir("noprecision");
  auto path = (dir / "e.h5").string();
  auto meta = make_meta(6);
  meta.precision = "bf16";
  write_store(path, meta, make_rows(0, 4, 6));
  ASSERT_EQ(EmbeddingReader(path).meta().precision, "bf16");
  {  // as written before the attribute existed
    H5Handle f{H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose};
    ASSERT_GE(f.id, 0);
    ASSERT_GE(H5Adelete(f.id, "precision"), 0);
  }
  EXPECT_EQ(EmbeddingReader(path).meta().precision, "fp32");
  fs::remove_all(dir);
}

TEST(Store, MetaFileHasNoEmbeddingsButKeepsDim) {
  auto dir = temp_dir("meta");
  auto rows = make_rows(0, 10, 8);
  rows.embeddings = at::Tensor();
  auto path = (dir / "meta.h5").string();
  write_store(path, make_meta(8), rows);
  {
    EmbeddingReader r(path);
    EXPECT_FALSE(r.has_embeddings());
    EXPECT_FALSE(r.meta().with_embeddings);
    EXPECT_EQ(r.dim(), 8);
    EXPECT_EQ(r.size(), 10);
    auto all = r.read_all();
    EXPECT_FALSE(all.embeddings.defined());
    EXPECT_EQ(all.paths, rows.paths);
    H5Handle f{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
    EXPECT_EQ(H5Lexists(f.id, "embeddings", H5P_DEFAULT), 0);

    // A reader's meta() carried into a writer keeps the file metadata-only (index add).
    EmbeddingWriter w((dir / "meta2.h5").string(), r.meta(), 4);
    w.append(all);
    w.append(make_rows(10, 3, 8));  // embeddings dropped
    w.finish();
  }
  EmbeddingReader r2((dir / "meta2.h5").string());
  EXPECT_FALSE(r2.has_embeddings());
  EXPECT_EQ(r2.size(), 13);
  EXPECT_EQ(r2.read(10, 3).ids, (std::vector<int64_t>{10, 11, 12}));
  fs::remove_all(dir);
}

TEST(Store, EmptyFileWithEmbeddingsHasZeroRows) {
  auto dir = temp_dir("empty");
  Rows none;
  none.embeddings = at::zeros({0, 8});
  auto path = (dir / "empty.h5").string();
  write_store(path, make_meta(8), none);
  EmbeddingReader r(path);
  EXPECT_TRUE(r.has_embeddings());
  EXPECT_EQ(r.size(), 0);
  EXPECT_EQ(r.read_all().embeddings.sizes(), (at::IntArrayRef{0, 8}));
  fs::remove_all(dir);
}

TEST(Store, ReaderErrorsNameTheFile) {
  auto dir = temp_dir("errors");
  const auto missing = (dir / "missing.h5").string();
  expect_error([&] { EmbeddingReader r(missing); }, missing, "no such file");
  const auto text = (dir / "notes.h5").string();
  std::ofstream(text) << "just some text, not HDF5\n";
  expect_error([&] { EmbeddingReader r(text); }, text, "not an HDF5 file");
  expect_error([&] { EmbeddingReader r(dir.string()); }, dir.string(), "directory");

  auto good = [&](const std::string& name) {
    auto p = (dir / name).string();
    write_store(p, make_meta(4), make_rows(0, 6, 4));
    return p;
  };
  const auto no_labels = good("no_labels.h5");
  edit_file(no_labels, [](hid_t f) { H5Ldelete(f, "labels", H5P_DEFAULT); });
  expect_error([&] { EmbeddingReader r(no_labels); }, no_labels, "missing dataset /labels");

  const auto short_labels = good("short_labels.h5");
  edit_file(short_labels, [](hid_t f) {
    H5Ldelete(f, "labels", H5P_DEFAULT);
    hsize_t n = 5;
    H5Handle s{H5Screate_simple(1, &n, nullptr), H5Sclose};
    H5Handle d{H5Dcreate2(f, "labels", H5T_STD_I32LE, s.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
  });
  expect_error([&] { EmbeddingReader r(short_labels); }, short_labels, "/labels has 5 entries but /ids has 6");

  const auto wrong_dim = good("wrong_dim.h5");
  edit_file(wrong_dim, [](hid_t f) {
    H5Handle a{H5Aopen(f, "dim", H5P_DEFAULT), H5Aclose};
    int64_t d = 5;
    H5Awrite(a.id, H5T_NATIVE_INT64, &d);
  });
  expect_error([&] { EmbeddingReader r(wrong_dim); }, wrong_dim, "attribute dim is 5");

  const auto f64 = good("float64.h5");
  edit_file(f64, [](hid_t f) {
    H5Ldelete(f, "embeddings", H5P_DEFAULT);
    hsize_t dims[2] = {6, 4};
    H5Handle s{H5Screate_simple(2, dims, nullptr), H5Sclose};
    H5Handle d{H5Dcreate2(f, "embeddings", H5T_IEEE_F64LE, s.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
  });
  expect_error([&] { EmbeddingReader r(f64); }, f64, "float32");

  const auto future = good("future.h5");
  edit_file(future, [](hid_t f) {
    H5Handle a{H5Aopen(f, "format_version", H5P_DEFAULT), H5Aclose};
    int32_t v = kStoreFormatVersion + 1;
    H5Awrite(a.id, H5T_NATIVE_INT32, &v);
  });
  expect_error([&] { EmbeddingReader r(future); }, future, "format version");

  // A truncated file: HDF5's own error is translated, never an H5::Exception.
  const auto cut = good("cut.h5");
  fs::resize_file(cut, fs::file_size(cut) / 2);
  try {
    EmbeddingReader r(cut);
    r.read_all();
    ADD_FAILURE() << "truncated file accepted";
  } catch (const invp::Error& e) {
    EXPECT_NE(std::string(e.what()).find(cut), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Store, WriteStoreRejectsInconsistentRows) {
  auto dir = temp_dir("reject");
  const auto p = (dir / "e.h5").string();
  auto rows = make_rows(0, 5, 4);
  rows.labels.pop_back();
  expect_error([&] { write_store(p, make_meta(4), rows); }, p, "disagree in length");
  expect_error([&] { write_store(p, make_meta(3), make_rows(0, 5, 4)); }, p, "float tensor of 5 x 3");
  EXPECT_FALSE(fs::exists(p));
  fs::remove_all(dir);
}

// The check of string references keeps a bounded number of parsed heap collections: a pass over
// every row of a large file (what index merge does) used to keep one entry per string.
TEST(Store, StringCheckKeepsBoundedState) {
  const int64_t n = 60000;  // about 100 heap collections
  auto rows = make_rows(0, n, 2);
  for (auto& p : rows.paths) p = "/collections/of/images/somewhere/deep/in/a/tree/" + p;
  auto meta = make_meta(2);
  const auto path = (temp_dir("many_strings") / "s.h5").string();
  write_store(path, meta, rows);
  H5Handle f{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  H5Handle d{H5Dopen2(f.id, "paths", H5P_DEFAULT), H5Dclose};
  invp::store::detail::VlenGuard guard;
  guard.open(path, f.id);
  for (int64_t s = 0; s < n; s += 8192) guard.check(d.id, "paths", s, std::min<int64_t>(8192, n - s));
  ASSERT_GT(guard.parsed_collections(), 32u) << "too few collections for the bound to matter";
  EXPECT_LE(guard.kept_collections(), 32u);
  // Still checks: every row reads back through the reader, which runs the same guard.
  EmbeddingReader r(path);
  EXPECT_EQ(r.read(n - 3, 3).paths.back(), rows.paths.back());
}

TEST(Rows, AppendConcatenates) {
  Rows a;
  a.append(make_rows(0, 3, 4));
  a.append(make_rows(3, 4, 4));
  a.append(Rows());
  auto whole = make_rows(0, 7, 4);
  EXPECT_EQ(a.ids, whole.ids);
  EXPECT_EQ(a.paths, whole.paths);
  EXPECT_EQ(a.labels, whole.labels);
  EXPECT_TRUE(at::equal(a.embeddings, whole.embeddings));
  Rows m = make_rows(0, 2, 4);
  m.embeddings = at::Tensor();
  Rows more = make_rows(2, 2, 4);
  more.embeddings = at::Tensor();
  m.append(more);
  EXPECT_EQ(m.size(), 4);
  EXPECT_FALSE(m.embeddings.defined());
  EXPECT_THROW(m.append(make_rows(2, 1, 4)), invp::Error);
}
