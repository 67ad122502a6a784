// Filters over an index's metadata: which items a query may return, which items a removal
// takes out. Grammar (one string, as given to --filter):
//   filter := term ("," term)*            terms are ANDed
//   term   := field ("=" | "!=") values
//   values := value ("|" value)*          alternatives are ORed
//   field  := "category" | "label" | "id" | "path"
// category values are category names (as `invp inspect` lists them); label and id values
// are whole numbers or inclusive ranges "lo..hi"; path values are shell patterns (`*`, `?`,
// `[...]`; `*` also matches across '/') matched against the item's whole path or any tail
// of it that starts after a '/', so "photos/2024/*" finds /home/me/photos/2024/a.jpg.
// "!=" is the negation of the same term with "=". An item with no label matches no
// category or label value (and so does match "!=").
#pragma once
#include <invp/index/id_set.h>

#include <cstdint>
#include <string>
#include <vector>

namespace invp::search {

class IndexHandle;

struct FilterTerm {
  enum class Field { category, label, id, path };
  Field field = Field::id;
  bool negate = false;
  std::vector<std::pair<int64_t, int64_t>> ranges;  // label / id: inclusive ranges
  std::vector<std::string> names;                   // category names / path patterns
};

class Filter {
 public:
  Filter() = default;
  // Throws invp::Error("--filter", ...) naming the term that is wrong and why.
  static Filter parse(const std::string& text);
  bool empty() const { return terms_.empty(); }
  const std::string& text() const { return text_; }
  const std::vector<FilterTerm>& terms() const { return terms_; }
  // CATEGORIES maps labels to names; an unknown category name in the filter throws
  // invp::Error("--filter", ...) listing the known ones.
  bool matches(int64_t id, int32_t label, const std::string& path, const std::vector<std::string>& categories) const;

 private:
  std::string text_;
  std::vector<FilterTerm> terms_;
};

// The ids of H's items that F admits, over [0, next_id).
index::IdSet select_ids(IndexHandle& h, const Filter& f);

}  // namespace invp::search
