#include <invp/core/error.h>
#include <invp/index/id_set.h>

#include <string>

namespace invp::index {

IdSet::IdSet(int64_t bound) : bound_(bound < 0 ? 0 : bound), bits_(size_t((bound_ + 7) >> 3), 0) {}

void IdSet::insert(int64_t id) {
  if (id < 0 || id >= bound_)
    throw Error("", "id " + std::to_string(id) + " outside [0, " + std::to_string(bound_) + ")");
  uint8_t& b = bits_[size_t(id >> 3)];
  const uint8_t m = uint8_t(1u << (id & 7));
  if (!(b & m)) b |= m, ++count_;
}

std::vector<int64_t> IdSet::members() const {
  std::vector<int64_t> out;
  out.reserve(size_t(count_));
  for (int64_t i = 0; i < bound_; ++i)
    if (contains(i)) out.push_back(i);
  return out;
}

}  // namespace invp::index
