#include <invp/core/memory.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#if defined(__GLIBC__) && defined(__linux__)
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux >= 5.14; older kernels answer EINVAL
#endif
#define INVP_HAVE_RESIDENT_HEAP 1
#endif

namespace invp {

size_t reserve_resident_heap(size_t bytes) {
#ifdef INVP_HAVE_RESIDENT_HEAP
  constexpr size_t kMax = size_t(8) << 30;  // beyond this, faulting is the lesser cost
  if (bytes == 0 || bytes > kMax) return 0;
  if (const char* off = std::getenv("INVP_RESIDENT_HEAP"); off && std::string(off) == "0") return 0;
  // Every thread allocates from the main (brk) arena, large blocks included, and freed memory
  // is never handed back: the populated block freed below is where later allocations go.
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
  void* p = std::malloc(bytes);
  if (!p) return 0;
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (uintptr_t(p) + page - 1) & ~(page - 1);
  const uintptr_t end = (uintptr_t(p) + bytes) & ~(page - 1);
  size_t done = 0;
  if (end > begin && madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE) == 0)
    done = end - begin;
  std::free(p);
  return done;
#else
  (void)bytes;
  return 0;
#endif
}

void keep_large_blocks_mapped() {
#ifdef INVP_HAVE_RESIDENT_HEAP
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
}

}  // namespace invp
