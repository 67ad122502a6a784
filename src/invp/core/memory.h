// Process memory helpers for short-lived commands.
#pragma once
#include <cstddef>

namespace invp {

// Makes the next ~BYTES of heap allocations (from any thread) land on pages that are already
// resident, so that loading a large file into fresh memory does not pay one page fault per
// 4 KiB. On the VMs this was measured on, first-touch faults cost more than reading a FAISS
// index itself, and populating the same memory in one madvise(MADV_POPULATE_WRITE) call is
// far cheaper (BENCHMARKS.md, "`invp query`, one image, 60k index").
// Process-wide and one-way: glibc malloc is switched to one arena, no mmap'd chunks and no
// trimming, so freed memory stays with the process. Meant for one-shot commands (query,
// inspect) that load a known amount of data and exit; never for long-running ones. Does
// nothing (and costs nothing) where glibc or the kernel lacks the needed calls.
// INVP_RESIDENT_HEAP=0 in the environment turns it off (for comparisons).
// Returns the bytes made resident (0 when skipped).
size_t reserve_resident_heap(size_t bytes);

// For commands that stream batch-sized blocks for as long as they run (index build and merge,
// dedup, query --serve): glibc raises its mmap threshold to the size of the first large block
// freed, after which such blocks come from the heap and fragment it, so anonymous memory grew
// with the number of batches (with the rows merged, the items scanned). A fixed threshold
// (glibc's initial one) keeps them mapped and returns them when freed. Process-wide; does
// nothing outside glibc.
void keep_large_blocks_mapped();

}  // namespace invp
