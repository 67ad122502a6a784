// Editing an index directory in place: removing items, compacting tombstones, labelling
// added items. Each edit writes a new generation and commits index.json last (index_dir.h),
// so a killed edit leaves the previous generation intact; ids of the remaining items never
// change and later adds continue after the largest id ever given.
#pragma once
#include <invp/search/index_dir.h>
#include <invp/store/embedding_store.h>

#include <cstdint>
#include <string>
#include <vector>

namespace invp::search {

struct RemoveReport {
  int64_t removed = 0;     // items taken out
  int64_t missing = 0;     // asked-for ids the index does not hold (already removed, never added)
  int64_t size = 0;        // items left
  bool in_place = false;   // removed from the FAISS index itself (Flat, IVF in memory)
  int64_t tombstones = 0;  // otherwise: removed vectors the FAISS index still holds, skipped by
                           // every search until `compact_index`
  int generation = 0;
  double seconds = 0;
};
// Removes IDS from DIR. Flat and in-memory IVF indexes drop the vectors; HNSW and on-disk
// IVF keep them as tombstones (the metadata no longer has them, and every search admits only
// ids the metadata holds). Nothing to remove: no new generation.
RemoveReport remove_from_index(const std::string& dir, std::vector<int64_t> ids);

struct CompactReport {
  int64_t dropped = 0;  // tombstones removed
  int64_t size = 0;
  int generation = 0;
  double seconds = 0;
};
// Rebuilds the FAISS index of DIR from the vectors its metadata holds (same recipe, search
// parameters kept), dropping the tombstones. On-disk indexes are refused (rebuild them with
// `invp index build --on-disk` from the metadata file). No tombstones: nothing is written.
CompactReport compact_index(const std::string& dir);

// Ids listed in a text file: whole numbers separated by white space or commas; '#' starts a
// comment. Throws invp::Error naming "file:line" for anything else.
std::vector<int64_t> read_id_list(const std::string& path);
// The ids a dedup report (`invp --json dedup` output) marks as duplicates: every item of
// every group except the group's representative.
std::vector<int64_t> dedup_report_duplicates(const std::string& path);

// Labels ROWS from a CSV of `path,label` lines (a header line "path,label" is allowed):
// LABEL is a category name (names not yet in CATEGORIES are appended to it) or a whole
// number. A row matches a line whose path equals its path, or is a tail of it after a '/'.
// Rows without a line keep their label. Returns how many rows were labelled. Throws
// invp::Error naming "file:line" for malformed lines.
int64_t apply_label_csv(const std::string& csv, store::Rows& rows, std::vector<std::string>& categories);

}  // namespace invp::search
