// Internal to store/: checks the on-disk references of variable-length strings before HDF5
// decodes them. HDF5 1.10.8 trusts global-heap references: a damaged /paths made H5HG_read
// segfault, abort or spin on a noticeable share of random byte mutations of a small store file.
// So, for the rows about to be read, we read the raw vlen descriptors (u32 length, heap
// collection address, u32 object index) and parse each referenced collection ("GCOL") with
// bounds checks, the way HDF5 will, requiring the object to exist with exactly that length.
// Only contiguous layouts can be checked this way; the reader refuses others.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace invp::store::detail {

class VlenGuard {
 public:
  VlenGuard() = default;
  // `file` is the open HDF5 file of `path` (for its address/length sizes and user block).
  void open(const std::string& path, hid_t file);
  ~VlenGuard();
  // Throws invp::Error(path, …) unless rows [start, start + n) of the vlen string dataset
  // `name` refer to sound heap objects.
  void check(hid_t dataset, const std::string& name, int64_t start, int64_t n);
  uint64_t file_size() const { return file_size_; }
  // Bytes one vlen element takes in the file (length, heap address, object index).
  size_t vlen_disk_size() const { return 4 + sizeof_addr_ + 4; }
  // Collections parsed so far, and those kept for later rows (bounded).
  uint64_t parsed_collections() const { return parsed_; }
  size_t kept_collections() const { return collections_.size(); }

 private:
  // Object sizes by index (absent objects missing) of the collection at a file address; the
  // reference is valid until the next call.
  const std::map<uint32_t, uint64_t>& collection(uint64_t addr, const std::string& name);
  bool read_at(uint64_t offset, void* buf, size_t n) const;
  uint64_t decode(const unsigned char* p, size_t bytes) const;

  std::string path_;
  int fd_ = -1;
  uint64_t file_size_ = 0, base_ = 0;
  size_t sizeof_addr_ = 8, sizeof_size_ = 8;
  std::map<uint64_t, std::map<uint32_t, uint64_t>> collections_;
  uint64_t parsed_ = 0;
};

}  // namespace invp::store::detail
