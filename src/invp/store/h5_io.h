// Internal to store/: the HDF5 side of the embedding store (layout in embedding_store.h).
// Every function here either succeeds or throws invp::Error naming the file; H5::Exception
// is translated at this boundary and never reaches callers.
#pragma once
#include <invp/core/error.h>
#include <invp/store/embedding_store.h>

#include <H5Cpp.h>

#include <cstdint>
#include <memory>
#include <string>

namespace invp::store::detail {

// Silences HDF5's own error printing (once per process) before any HDF5 call.
void init_hdf5();

// The innermost message on HDF5's error stack, or the exception's own detail.
std::string hdf5_reason(const H5::Exception& e);

// Runs f, turning an H5::Exception into invp::Error(file, what + reason, fix).
template <class F>
auto translate_h5(const std::string& file, const std::string& what, F&& f, const std::string& fix = "")
    -> decltype(f()) {
  init_hdf5();
  try {
    return f();
  } catch (const H5::Exception& e) {
    throw Error(file, what + ": " + hdf5_reason(e), fix);
  }
}

// Owns one HDF5 C++ handle (H5::H5File, H5::DataSet) without the message its destructor
// prints: ~H5File and ~DataSet write "H5Fclose failed" / "H5Dclose failed" to std::cerr when
// the close fails, as it does on a full disk after a failed write. The failure has already
// been reported once, as invp's error line; here a handle that cannot close is abandoned
// (HDF5 closes it at exit), so the user sees that one line and nothing else.
template <class T>
class QuietHandle {
 public:
  QuietHandle() : h_(std::make_unique<T>()) {}
  QuietHandle(const QuietHandle&) = delete;
  QuietHandle& operator=(const QuietHandle&) = delete;
  ~QuietHandle() {
    try {
      h_->close();
    } catch (const H5::Exception&) {
      (void)h_.release();
    }
  }
  QuietHandle& operator=(T h) {
    *h_ = std::move(h);
    return *this;
  }
  T* operator->() { return h_.get(); }
  T& operator*() { return *h_; }

 private:
  std::unique_ptr<T> h_;
};

// A view of consecutive rows in plain arrays (embeddings may be null for metadata-only).
struct RowSpan {
  int64_t n = 0;
  const float* embeddings = nullptr;  // n × dim
  const int64_t* ids = nullptr;
  const int32_t* labels = nullptr;
  const std::string* paths = nullptr;
};

// Writes one store file of exactly `rows` rows at `path`, block by block (blocks given in
// order, any sizes). `shown` is the name used in errors (the final path, not the temp one).
class StoreFileWriter {
 public:
  StoreFileWriter(const std::string& path, const std::string& shown, const StoreMeta& meta,
                  int64_t rows);
  void write(const RowSpan& block);
  void close();  // checks every row was written

 private:
  std::string shown_;
  StoreMeta meta_;
  int64_t rows_, done_ = 0;
  // Declared file first: members are destroyed in reverse, so the datasets close before it.
  QuietHandle<H5::H5File> file_;
  QuietHandle<H5::DataSet> emb_, ids_, labels_, paths_;
};


}  // namespace invp::store::detail
