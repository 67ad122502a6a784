// A set of ids as a bitmap: what a filtered search may return, or what a removal took out.
// The bit layout is FAISS's IDSelectorBitmap (bit id & 7 of byte id >> 3), so the set is
// handed to FAISS as it is.
#pragma once
#include <cstdint>
#include <vector>

namespace invp::index {

class IdSet {
 public:
  // An empty set over ids [0, bound).
  explicit IdSet(int64_t bound = 0);
  // Inserting an id outside [0, bound) throws invp::Error.
  void insert(int64_t id);
  bool contains(int64_t id) const {
    return id >= 0 && id < bound_ && (bits_[size_t(id >> 3)] >> (id & 7)) & 1;
  }
  int64_t count() const { return count_; }
  int64_t bound() const { return bound_; }
  const uint8_t* bitmap() const { return bits_.data(); }
  int64_t bitmap_bytes() const { return int64_t(bits_.size()); }
  // The members, ascending.
  std::vector<int64_t> members() const;

 private:
  int64_t bound_ = 0, count_ = 0;
  std::vector<uint8_t> bits_;
};

// How a filtered search went (AnnIndex::search with an IdSet).
struct FilterStats {
  bool exact = false;      // few admitted items: scored exactly, all of them (no index search)
  bool in_faiss = false;   // the set was applied inside FAISS's search (IDSelector)
  int64_t fetched = 0;     // otherwise: the most candidates fetched for one query to find k
  bool exhausted = false;  // some query searched the whole index and found fewer than k
};

}  // namespace invp::index
