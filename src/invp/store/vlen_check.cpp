#include <invp/core/error.h>
#include <invp/store/vlen_check.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace invp::store::detail {
namespace {

constexpr uint64_t kMinCollection = 4096;  // HDF5 never writes smaller collections (H5HG_MINSIZE)
// Parsed collections kept for the rows that follow (neighbouring rows share one). A bound, since
// a pass over every row of a large file (index merge) would otherwise keep one entry per string.
constexpr size_t kKeptCollections = 32;
constexpr const char* kFix = "the file is damaged; embed again";

uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t(7); }

}  // namespace

void VlenGuard::open(const std::string& path, hid_t file) {
  path_ = path;
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st {};
  if (fd_ < 0 || ::fstat(fd_, &st) != 0) throw Error(path, "cannot open for reading");
  file_size_ = uint64_t(st.st_size);
  hid_t fcpl = H5Fget_create_plist(file);
  hsize_t userblock = 0;
  bool ok = fcpl >= 0 && H5Pget_sizes(fcpl, &sizeof_addr_, &sizeof_size_) >= 0 &&
            H5Pget_userblock(fcpl, &userblock) >= 0;
  if (fcpl >= 0) H5Pclose(fcpl);
  if (!ok) throw Error(path, "cannot read the HDF5 superblock sizes", kFix);
  base_ = userblock;  // HDF5 addresses count from the superblock, which follows the user block
  auto valid = [](size_t s) { return s == 2 || s == 4 || s == 8; };
  if (!valid(sizeof_addr_) || !valid(sizeof_size_)) throw Error(path, "unsupported HDF5 address size", kFix);
}

VlenGuard::~VlenGuard() {
  if (fd_ >= 0) ::close(fd_);
}

bool VlenGuard::read_at(uint64_t offset, void* buf, size_t n) const {
  if (offset > file_size_ || n > file_size_ - offset) return false;
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t got = ::pread(fd_, p, n, off_t(offset));
    if (got <= 0) return false;
    p += got, offset += uint64_t(got), n -= size_t(got);
  }
  return true;
}

uint64_t VlenGuard::decode(const unsigned char* p, size_t bytes) const {
  uint64_t v = 0;
  for (size_t i = bytes; i-- > 0;) v = (v << 8) | p[i];  // HDF5 encodes little-endian
  return v;
}

const std::map<uint32_t, uint64_t>& VlenGuard::collection(uint64_t addr, const std::string& name) {
  auto it = collections_.find(addr);
  if (it != collections_.end()) return it->second;
  auto bad = [&](const std::string& why) -> Error {
    return Error(path_, "/" + name + " refers to a damaged string heap (" + why + ")", kFix);
  };
  const size_t hdr = 8 + sizeof_size_, objhdr = 8 + sizeof_size_;
  if (addr > file_size_ || base_ > file_size_ - addr) throw bad("address beyond the end of the file");
  const uint64_t at = base_ + addr;
  unsigned char h[16] = {};
  if (!read_at(at, h, hdr)) throw bad("truncated collection header");
  if (std::memcmp(h, "GCOL", 4) != 0 || h[4] != 1) throw bad("no collection signature");
  const uint64_t size = decode(h + 8, sizeof_size_);
  if (size < kMinCollection || size > file_size_ - at) throw bad("collection size out of range");

  std::vector<unsigned char> c(static_cast<size_t>(size));
  if (!read_at(at, c.data(), c.size())) throw bad("truncated collection");
  std::map<uint32_t, uint64_t> objects;
  // Walk the objects exactly as HDF5 does, but refuse anything that leaves the collection.
  for (uint64_t p = hdr; p < size;) {
    if (p + objhdr > size) break;  // a tail too small for a header is free space
    const uint32_t idx = uint32_t(decode(&c[p], 2));
    const uint64_t osize = decode(&c[p + 8], sizeof_size_);
    if (osize > size) throw bad("object larger than its collection");
    const uint64_t need = idx > 0 ? objhdr + align8(osize) : osize;
    if (need == 0 || need > size - p) throw bad("object overruns its collection");
    if (idx > 0 && !objects.emplace(idx, osize).second) throw bad("duplicate object index");
    p += need;
  }
  ++parsed_;
  if (collections_.size() >= kKeptCollections) collections_.clear();
  return collections_.emplace(addr, std::move(objects)).first->second;
}

void VlenGuard::check(hid_t dataset, const std::string& name, int64_t start, int64_t n) {
  if (n <= 0) return;
  // HDF5 allocates length × base size per string: a damaged base size asks for gigabytes.
  hid_t type = H5Dget_type(dataset);
  hid_t base = type >= 0 ? H5Tget_super(type) : -1;
  const size_t base_size = base >= 0 ? H5Tget_size(base) : 0;
  if (base >= 0) H5Tclose(base);
  if (type >= 0) H5Tclose(type);
  if (base_size != 1) throw Error(path_, "/" + name + " has a damaged string type", kFix);
  const size_t esize = vlen_disk_size();
  hid_t dcpl = H5Dget_create_plist(dataset);
  const H5D_layout_t layout = dcpl >= 0 ? H5Pget_layout(dcpl) : H5D_LAYOUT_ERROR;
  if (dcpl >= 0) H5Pclose(dcpl);
  if (layout != H5D_CONTIGUOUS)
    throw Error(path_, "/" + name + " must be stored contiguously (unchunked), as invp writes it",
                "write the strings without chunking or compression");
  const haddr_t offset = H5Dget_offset(dataset);
  const hsize_t stored = H5Dget_storage_size(dataset);
  if (offset == HADDR_UNDEF) throw Error(path_, "/" + name + " has no stored data", kFix);
  const uint64_t first = uint64_t(start) * esize, bytes = uint64_t(n) * esize;
  if (stored < first + bytes || offset > file_size_ || stored > file_size_ - offset)
    throw Error(path_, "/" + name + " is shorter than its extent", kFix);

  std::vector<unsigned char> raw(static_cast<size_t>(bytes));
  if (!read_at(offset + first, raw.data(), raw.size())) throw Error(path_, "/" + name + " cannot be read", kFix);
  for (int64_t i = 0; i < n; ++i) {
    const unsigned char* e = &raw[size_t(i) * esize];
    const uint64_t len = decode(e, 4), addr = decode(e + 4, sizeof_addr_);
    const uint64_t idx = decode(e + 4 + sizeof_addr_, 4);
    if (addr == 0) continue;  // a null string: HDF5 does not touch the heap
    const auto& objects = collection(addr, name);
    auto obj = objects.find(uint32_t(idx));
    if (idx == 0 || idx > 0xffff || obj == objects.end() || obj->second != len)
      throw Error(path_, "/" + name + " row " + std::to_string(start + i) + " refers to a missing or resized string",
                  kFix);
  }
}

}  // namespace invp::store::detail
