#include <invp/core/error.h>
#include <invp/search/filter.h>
#include <invp/search/index_dir.h>

#include <fnmatch.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace invp::search {
namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return out;
    start = at + 1;
  }
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

bool parse_int(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end) return false;
  *out = v;
  return true;
}

[[noreturn]] void bad(const std::string& term, const std::string& why) {
  throw Error("--filter", "'" + term + "': " + why,
              "write terms like category=Coat|Shirt, label!=3, id=100..200, path=photos/*, joined by ','");
}

FilterTerm parse_term(const std::string& term) {
  FilterTerm t;
  const size_t eq = term.find('=');
  if (eq == std::string::npos || eq == 0) bad(term, "expected field=value or field!=value");
  t.negate = term[eq - 1] == '!';
  const std::string field = trim(term.substr(0, t.negate ? eq - 1 : eq));
  const std::string rhs = term.substr(eq + 1);
  if (field == "category") t.field = FilterTerm::Field::category;
  else if (field == "label") t.field = FilterTerm::Field::label;
  else if (field == "id") t.field = FilterTerm::Field::id;
  else if (field == "path") t.field = FilterTerm::Field::path;
  else bad(term, "unknown field '" + field + "' (category, label, id or path)");
  for (std::string v : split(rhs, '|')) {
    v = trim(v);
    if (v.empty()) bad(term, "empty value");
    if (t.field == FilterTerm::Field::category || t.field == FilterTerm::Field::path) {
      t.names.push_back(v);
      continue;
    }
    int64_t lo = 0, hi = 0;
    const size_t dots = v.find("..");
    const bool ok = dots == std::string::npos ? parse_int(v, &lo) && parse_int(v, &hi)
                                              : parse_int(v.substr(0, dots), &lo) && parse_int(v.substr(dots + 2), &hi);
    if (!ok) bad(term, "'" + v + "' is not a whole number or a range lo..hi");
    if (hi < lo) bad(term, "empty range " + v);
    t.ranges.push_back({lo, hi});
  }
  return t;
}

bool in_ranges(int64_t v, const std::vector<std::pair<int64_t, int64_t>>& rs) {
  return std::any_of(rs.begin(), rs.end(), [&](const auto& r) { return v >= r.first && v <= r.second; });
}

bool path_matches(const std::string& pattern, const std::string& path) {
  if (fnmatch(pattern.c_str(), path.c_str(), 0) == 0) return true;
  if (!pattern.empty() && pattern[0] == '/') return false;
  for (size_t at = path.find('/'); at != std::string::npos; at = path.find('/', at + 1))
    if (fnmatch(pattern.c_str(), path.c_str() + at + 1, 0) == 0) return true;
  return false;
}

}  // namespace

Filter Filter::parse(const std::string& text) {
  Filter f;
  f.text_ = trim(text);
  if (f.text_.empty()) return f;
  for (const auto& term : split(f.text_, ',')) {
    if (trim(term).empty()) bad(f.text_, "empty term (two commas, or one at an end)");
    f.terms_.push_back(parse_term(trim(term)));
  }
  return f;
}

bool Filter::matches(int64_t id, int32_t label, const std::string& path,
                     const std::vector<std::string>& categories) const {
  for (const auto& t : terms_) {
    bool hit = false;
    switch (t.field) {
      case FilterTerm::Field::id: hit = in_ranges(id, t.ranges); break;
      case FilterTerm::Field::label: hit = label >= 0 && in_ranges(label, t.ranges); break;
      case FilterTerm::Field::path:
        hit = std::any_of(t.names.begin(), t.names.end(), [&](const std::string& p) { return path_matches(p, path); });
        break;
      case FilterTerm::Field::category:
        hit = label >= 0 && size_t(label) < categories.size() &&
              std::find(t.names.begin(), t.names.end(), categories[size_t(label)]) != t.names.end();
        break;
    }
    if (hit == t.negate) return false;
  }
  return true;
}

index::IdSet select_ids(IndexHandle& h, const Filter& f) {
  const auto& cats = h.categories();
  for (const auto& t : f.terms())
    if (t.field == FilterTerm::Field::category)
      for (const auto& name : t.names)
        if (std::find(cats.begin(), cats.end(), name) == cats.end()) {
          std::string known;
          for (size_t i = 0; i < cats.size() && i < 20; ++i) known += (i ? ", " : "") + cats[i];
          throw Error("--filter", "no category '" + name + "' in " + h.dir(),
                      cats.empty() ? "this index has no categories" : "known: " + known + (cats.size() > 20 ? ", ..." : ""));
        }
  index::IdSet out(h.info().next_id);
  const auto& ids = h.ids();
  const auto& labels = h.labels();
  const bool by_path = std::any_of(f.terms().begin(), f.terms().end(),
                                   [](const FilterTerm& t) { return t.field == FilterTerm::Field::path; });
  static const std::vector<std::string> none;
  const auto& paths = by_path ? h.paths() : none;
  static const std::string no_path;
  for (size_t r = 0; r < ids.size(); ++r)
    if (f.matches(ids[r], labels[r], by_path ? paths[r] : no_path, cats)) out.insert(ids[r]);
  return out;
}

}  // namespace invp::search
