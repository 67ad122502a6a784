// Recipes: the indexes/*.toml parser (a strict flat subset of TOML), the built-in recipes,
// placeholder resolution, memory estimates and the automatic choice.
#include <invp/core/error.h>
#include <invp/index/ann_detail.h>
#include <invp/index/ann_index.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace invp::index {
namespace {
constexpr double kMaxFactoryNumber = 1 << 20;  // bigger nlist/M would allocate absurdly
}  // namespace

namespace detail {

int64_t ivf_nlist(const Recipe& recipe, int64_t n) {
  n = std::max<int64_t>(n, 1);
  const int64_t train = recipe.train_size > 0 ? std::min(recipe.train_size, n) : n;
  const int64_t wanted = std::llround(4.0 * std::sqrt(double(n)));
  return std::clamp<int64_t>(wanted, 1, std::max<int64_t>(1, train / 39));
}

int64_t pq_subquantizers(int64_t dim) {
  const int64_t cap = std::min<int64_t>(64, std::max<int64_t>(1, dim / 4));
  for (int64_t m = cap; m > 1; --m)
    if (dim % m == 0) return m;
  return 1;
}

std::string resolve_factory(const Recipe& recipe, int64_t dim, int64_t n) {
  std::string out;
  const std::string& f = recipe.factory;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '{') {
      out += f[i];
      continue;
    }
    const size_t close = f.find('}', i);
    const std::string name = close == std::string::npos ? f.substr(i) : f.substr(i, close - i + 1);
    if (name == "{nlist}") {
      out += std::to_string(ivf_nlist(recipe, n));
    } else if (name == "{m}") {
      out += std::to_string(pq_subquantizers(dim));
    } else {
      throw Error("", "unknown placeholder '" + name + "' in factory '" + f + "'",
                  "the known placeholders are {nlist} and {m}");
    }
    i += name.size() - 1;
  }
  return out;
}

// FAISS 1.7.3 crashes (SIGFPE, endless loops) rather than throws on some factory strings
// ("PQ0", "HNSW1", "IVF0"), so only this subset reaches index_factory:
//   [IDMap2,|IDMap,] {OPQ<M>[_<D>] | PCA[R]<D> | RR<D> | L2norm ,}* main
//   main = Flat | HNSW<M>[,Flat|,SQ<q>] | IVF<nlist>,(Flat|SQ<q>|<pq>) | <pq>
//   pq = PQ<m>[x<bits>][np], q = 4|6|8|fp16; numbers ≥ 1, M ≥ 2, bits ≤ 12, D ≤ dim.
void check_factory(const std::string& f, int64_t dim) {
  static const std::regex transform(R"((OPQ)(\d+)(?:_(\d+))?|(PCAR?|RR)(\d+)|L2norm)");
  static const std::regex code(R"(Flat|SQ(?:4|6|8|fp16)|PQ(\d+)(?:x(\d+))?(?:np)?)");
  static const std::regex hnsw(R"(HNSW(\d+))"), ivf(R"(IVF(\d+))");
  auto bad = [&](const std::string& why) {
    return Error("", "factory '" + f + "' is not supported: " + why,
                 "use e.g. Flat, HNSW32,Flat, IVF{nlist},Flat or OPQ{m},IVF{nlist},PQ{m}np");
  };
  std::vector<std::string> t;
  std::stringstream ss(f);
  for (std::string tok; std::getline(ss, tok, ',');) t.push_back(tok);
  if (f.empty() || f.back() == ',') throw bad("empty part");
  size_t i = 0;
  if (i < t.size() && (t[i] == "IDMap2" || t[i] == "IDMap")) ++i;
  std::smatch m;
  auto num = [&](int g, int64_t lo, int64_t hi, const char* what) {
    if (!m[g].matched) return;
    const double v = std::strtod(m[g].str().c_str(), nullptr);
    if (v < double(lo) || v > double(hi))
      throw bad(std::string(what) + " " + m[g].str() + " outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  };
  for (; i + 1 < t.size() && std::regex_match(t[i], m, transform); ++i) {
    num(2, 1, dim, "OPQ sub-quantizers");
    num(3, 1, dim, "OPQ output dimension");
    num(5, 1, dim, "output dimension");
  }
  if (i >= t.size()) throw bad("no index after the transforms");
  auto check_code = [&](const std::string& tok) {
    if (!std::regex_match(tok, m, code)) throw bad("unknown code '" + tok + "'");
    num(1, 1, 4096, "PQ sub-quantizers");
    num(2, 1, 12, "PQ bits");
  };
  const size_t rest = t.size() - i;
  if (std::regex_match(t[i], m, hnsw)) {
    num(1, 2, 512, "HNSW links");
    if (rest > 2 || (rest == 2 && (t[i + 1].rfind("PQ", 0) == 0))) throw bad("HNSW takes Flat or SQ codes");
    if (rest == 2) check_code(t[i + 1]);
  } else if (std::regex_match(t[i], m, ivf)) {
    num(1, 1, int64_t(kMaxFactoryNumber), "nlist");
    if (rest != 2) throw bad("IVF needs exactly one code after it (Flat, SQ8, PQ…)");
    check_code(t[i + 1]);
  } else {
    if (rest != 1) throw bad("unexpected parts after '" + t[i] + "'");
    check_code(t[i]);
  }
}

std::string human_bytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace detail

namespace {

constexpr size_t kMaxRecipeBytes = 64 * 1024;
constexpr size_t kMaxFactoryChars = 200;  // std::regex (ours, index_factory's) recurses per char

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

bool is_identifier(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

struct Value {
  bool is_string = false;
  std::string text;
  double number = 0;
};

// Parses what follows "=": a "string" (escapes \" and \\ only) or a number, then an
// optional # comment. Throws a plain message; the caller adds file and line.
Value parse_value(const std::string& raw) {
  Value v;
  std::string rest;
  if (!raw.empty() && raw[0] == '"') {
    v.is_string = true;
    size_t i = 1;
    for (; i < raw.size() && raw[i] != '"'; ++i) {
      char c = raw[i];
      if (static_cast<unsigned char>(c) < 0x20) throw std::string("control character in a string");
      if (c == '\\') {
        if (++i >= raw.size() || (raw[i] != '"' && raw[i] != '\\'))
          throw std::string("unsupported escape in a string (only \\\" and \\\\)");
        c = raw[i];
      }
      v.text += c;
    }
    if (i >= raw.size()) throw std::string("unterminated string");
    rest = trim(raw.substr(i + 1));
  } else {
    const size_t hash = raw.find('#');
    std::string tok = trim(raw.substr(0, hash));
    if (tok.empty()) throw std::string("missing value");
    std::string digits;
    for (char c : tok) {
      if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == 'E' ||
            c == '+' || c == '-' || c == '_'))
        throw std::string("bad number '" + tok + "' (strings need double quotes)");
      if (c != '_') digits += c;
    }
    char* end = nullptr;
    v.number = std::strtod(digits.c_str(), &end);
    if (digits.empty() || *end != '\0' || !std::isfinite(v.number))
      throw std::string("bad number '" + tok + "'");
    return v;
  }
  if (!rest.empty() && rest[0] != '#') throw std::string("unexpected text after the value: '" + rest + "'");
  return v;
}

// FAISS must accept the factory for some dimension: first dim 8 (cheap, and what every
// placeholder recipe must pass), then common embedding widths, since a fixed "PQ32" can
// never split 8 dims. Returns the AnnIndex built for the accepted dim.
AnnIndex validation_index(const Recipe& r, const std::string& where) {
  if (r.factory.size() > kMaxFactoryChars)
    throw Error(where, "factory string longer than " + std::to_string(kMaxFactoryChars) + " characters");
  for (size_t i = 0; i < r.factory.size(); ++i) {
    const char c = r.factory[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || std::string(",_{}.").find(c) != std::string::npos))
      throw Error(where, std::string("unexpected character '") + c + "' in factory '" + r.factory + "'");
    if (std::isdigit(static_cast<unsigned char>(c)) &&
        (i == 0 || !std::isdigit(static_cast<unsigned char>(r.factory[i - 1])))) {
      if (std::strtod(r.factory.c_str() + i, nullptr) > kMaxFactoryNumber)
        throw Error(where, "number too large in factory '" + r.factory + "'");
    }
  }
  if (r.factory.find("IMI") != std::string::npos)
    throw Error(where, "IMI factories are not supported", "use IVF{nlist}");
  std::string first_error;
  for (int64_t dim : {8, 64, 96, 128, 192, 256, 384, 512, 768, 1024}) {
    try {
      return AnnIndex(r, dim, 10000);
    } catch (const Error& e) {
      if (first_error.empty()) first_error = e.what();
    }
  }
  throw Error(where, "unusable factory: " + first_error);
}

}  // namespace

Recipe load_recipe(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open recipe file", "check the path");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > kMaxRecipeBytes) throw Error(path, "recipe file is larger than 64 KiB");
  if (text.find('\0') != std::string::npos) throw Error(path, "recipe file contains NUL bytes");

  Recipe r;
  bool in_index = false, seen_index = false;
  std::set<std::string> seen;
  std::map<std::string, int> search_line;
  std::istringstream lines(text);
  std::string line;
  for (int no = 1; std::getline(lines, line); ++no) {
    const std::string where = path + ":" + std::to_string(no);
    const std::string s = trim(line);
    if (s.empty() || s[0] == '#') continue;
    if (s[0] == '[') {
      const size_t close = s.find(']');
      const std::string rest = close == std::string::npos ? "" : trim(s.substr(close + 1));
      if (close == std::string::npos || !(rest.empty() || rest[0] == '#'))
        throw Error(where, "malformed section header '" + s + "'", "write [index]");
      const std::string section = trim(s.substr(1, close - 1));
      if (section != "index")
        throw Error(where, "unknown section [" + section + "]", "recipes have one [index] section");
      if (seen_index) throw Error(where, "duplicate [index] section");
      in_index = seen_index = true;
      continue;
    }
    const size_t eq = s.find('=');
    if (eq == std::string::npos) throw Error(where, "expected 'key = value', got '" + s + "'");
    const std::string key = trim(s.substr(0, eq));
    if (!in_index) throw Error(where, "key '" + key + "' outside the [index] section", "put it under [index]");
    if (!seen.insert(key).second) throw Error(where, "duplicate key '" + key + "'");
    Value v;
    try {
      v = parse_value(trim(s.substr(eq + 1)));
    } catch (const std::string& problem) {
      throw Error(where, problem + " for key '" + key + "'");
    }
    auto want_string = [&] {
      if (!v.is_string) throw Error(where, "key '" + key + "' needs a \"string\"");
      return v.text;
    };
    auto want_number = [&] {
      if (v.is_string) throw Error(where, "key '" + key + "' needs a number, not a string");
      return v.number;
    };
    if (key == "name") {
      r.name = want_string();
      if (r.name.empty()) throw Error(where, "name must not be empty");
    } else if (key == "factory") {
      r.factory = want_string();
      if (r.factory.empty()) throw Error(where, "factory must not be empty");
    } else if (key == "metric") {
      r.metric = want_string();
      if (r.metric != "ip" && r.metric != "l2")
        throw Error(where, "unknown metric '" + r.metric + "'", "use \"ip\" or \"l2\"");
    } else if (key == "train_size") {
      const double t = want_number();
      if (t < 0 || t > 1e12 || t != std::floor(t))
        throw Error(where, "train_size must be a whole number ≥ 0 (0 = all vectors)");
      r.train_size = int64_t(t);
    } else if (key.rfind("search.", 0) == 0 && is_identifier(key.substr(7))) {
      const double p = want_number();
      if (p < 1 || p > kMaxFactoryNumber || p != std::floor(p))
        throw Error(where, "'" + key + "' must be a whole number in [1, 1048576]");
      r.search[key.substr(7)] = p;
      search_line[key.substr(7)] = no;
    } else {
      throw Error(where, "unknown key '" + key + "'",
                  "known keys: name, factory, metric, train_size, search.<parameter>");
    }
  }
  if (!seen_index) throw Error(path, "no [index] section", "start the recipe with [index]");
  if (r.factory.empty())
    throw Error(path, "missing key 'factory'", "add e.g. factory = \"HNSW32,Flat\" under [index]");
  if (r.name.empty()) r.name = std::filesystem::path(path).stem().string();

  // Search parameters are checked one by one so that the error names their line.
  Recipe bare = r;
  bare.search.clear();
  const AnnIndex probe = validation_index(bare, path);
  const auto tunable = probe.tunable_parameters();
  for (const auto& [name, value] : r.search) {
    if (std::find(tunable.begin(), tunable.end(), name) == tunable.end()) {
      std::string known;
      for (const auto& t : tunable) known += (known.empty() ? "" : ", ") + t;
      throw Error(path + ":" + std::to_string(search_line[name]),
                  "search parameter '" + name + "' does not apply to factory '" + r.factory + "'",
                  known.empty() ? "this index has no search parameters" : "use " + known);
    }
  }
  return r;
}

std::vector<std::string> builtin_recipe_names() { return {"flat", "hnsw", "ivf-flat", "ivf-pq"}; }

Recipe builtin_recipe(const std::string& name, int64_t dim) {
  if (dim < 1) throw Error("", "recipe for dimension " + std::to_string(dim), "dimension must be ≥ 1");
  // train_size 100000: ≥ 39 points per list up to nlist 2564 (≈ 4·sqrt(410k)); beyond that
  // nlist is capped rather than making k-means training dominate build time.
  if (name == "flat") return {"flat", "Flat", "ip", 0, {}};
  if (name == "hnsw") return {"hnsw", "HNSW32,Flat", "ip", 0, {{"efSearch", 64}}};
  if (name == "ivf-flat") return {"ivf-flat", "IVF{nlist},Flat", "ip", 100000, {{"nprobe", 16}}};
  if (name == "ivf-pq")
    return {"ivf-pq", "OPQ{m},IVF{nlist},PQ{m}np", "ip", 100000, {{"nprobe", 16}}};
  throw Error("", "unknown built-in recipe '" + name + "'",
              "use flat, hnsw, ivf-flat, ivf-pq or a recipe file");
}

int64_t estimate_memory(const Recipe& recipe, int64_t n, int64_t dim) {
  const std::string f = detail::resolve_factory(recipe, dim, n);
  std::vector<std::string> tokens;
  std::stringstream ss(f);
  for (std::string t; std::getline(ss, t, ',');) tokens.push_back(t);
  auto number_after = [](const std::string& t, size_t pos) { return std::atoll(t.c_str() + pos); };
  int64_t fixed = 0, per_vector = 0;
  bool ivf = false, has_codes = false;
  for (const auto& t : tokens) {
    if (t.rfind("IDMap", 0) == 0) continue;
    if (t.rfind("OPQ", 0) == 0 || t.rfind("PCA", 0) == 0 || t.rfind("RR", 0) == 0) {
      fixed += dim * dim * 4;  // a d×d (or smaller) matrix
    } else if (t.rfind("IVF", 0) == 0) {
      const int64_t nlist = number_after(t, 3);
      ivf = true;
      fixed += nlist * (dim * 4 + 48);  // centroids + two std::vectors per list
      per_vector += 8;                  // the id stored beside each code
    } else if (t.rfind("HNSW", 0) == 0) {
      const int64_t m = std::max<int64_t>(2, number_after(t, 4));
      // int32 links: 2M on level 0 plus M per upper level, ≈ M/(M−1) levels expected,
      // and offsets (8) + level (4) per vector.
      per_vector += 4 * (2 * m + 1) + 12;
    } else if (t.rfind("PQ", 0) == 0) {
      const int64_t m = number_after(t, 2);
      const size_t x = t.find('x');
      const int64_t nbits = x == std::string::npos ? 8 : number_after(t, x + 1);
      per_vector += (m * nbits + 7) / 8;
      fixed += (int64_t(1) << std::min<int64_t>(nbits, 16)) * dim * 4;  // sub-centroids
      has_codes = true;
    } else if (t.rfind("SQ", 0) == 0) {
      per_vector += t == "SQ4" ? (dim + 1) / 2 : t == "SQfp16" ? 2 * dim : dim;
      has_codes = true;
    } else if (t == "Flat") {
      per_vector += dim * 4;
      has_codes = true;
    }
  }
  if (!has_codes) per_vector += dim * 4;  // e.g. "HNSW32" alone stores flat vectors
  if (!ivf) per_vector += 8 + 40;         // IndexIDMap2: id_map entry + rev_map node
  return fixed + n * per_vector;
}

AutoChoice choose_recipe(int64_t n, int64_t dim, int64_t max_memory_bytes) {
  if (n < 1 || dim < 1)
    throw Error("", "cannot choose an index for " + std::to_string(n) + " vectors of dim " +
                        std::to_string(dim), "index at least one vector");
  // Rules, tried in order (autofaiss-style; see docs):
  //  1. n < 50000 and Flat fits: exact search costs n·d multiply-adds per query (≈ 1 ms
  //     at d = 128), cheaper than building a graph, and needs no training.
  //  2. n ≤ 1M and HNSW32 fits: best speed/recall; its build time and ~300 B/vector of
  //     links are affordable up to ~1M vectors.
  //  3. IVF-Flat fits: large n (fast k-means training, cheap adds), or HNSW over budget.
  //  4. OPQ+IVF-PQ fits: compressed codes (dim/4 bytes, ≤ 64) when even flat vectors don't.
  constexpr int64_t kFlatMaxN = 50000, kHnswMaxN = 1000000;
  const bool unlimited = max_memory_bytes <= 0;
  auto fits = [&](int64_t b) { return unlimited || b <= max_memory_bytes; };
  const std::string budget = unlimited ? "no memory limit" : "max memory " + detail::human_bytes(max_memory_bytes);
  const std::string size = std::to_string(n) + " vectors of dim " + std::to_string(dim);
  auto pick = [&](const std::string& name, const std::string& why) {
    AutoChoice c{builtin_recipe(name, dim), "", 0};
    c.estimated_bytes = estimate_memory(c.recipe, n, dim);
    c.reason = name + " for " + size + ": " + why + " (estimated " + detail::human_bytes(c.estimated_bytes) +
               ", " + budget + ")";
    return c;
  };
  const int64_t flat = estimate_memory(builtin_recipe("flat", dim), n, dim);
  const int64_t hnsw = estimate_memory(builtin_recipe("hnsw", dim), n, dim);
  const int64_t ivf_flat = estimate_memory(builtin_recipe("ivf-flat", dim), n, dim);
  const int64_t ivf_pq = estimate_memory(builtin_recipe("ivf-pq", dim), n, dim);
  if (n < kFlatMaxN && fits(flat))
    return pick("flat", "fewer than " + std::to_string(kFlatMaxN) + " vectors, exact search is cheap");
  if (n <= kHnswMaxN && fits(hnsw))
    return pick("hnsw", "up to " + std::to_string(kHnswMaxN) + " vectors and the graph fits in memory");
  if (fits(ivf_flat))
    return pick("ivf-flat", n > kHnswMaxN ? "more than " + std::to_string(kHnswMaxN) + " vectors"
                                          : "HNSW would need " + detail::human_bytes(hnsw));
  if (fits(ivf_pq))
    return pick("ivf-pq", "flat vectors would need " + detail::human_bytes(ivf_flat) + ", compressed codes fit");
  // The codes and ids are what an on-disk index keeps out of memory (mapped from .ivfdata);
  // the quantizer, OPQ matrix and codebooks stay in memory.
  const int64_t lists = n * (detail::pq_subquantizers(dim) + 8);
  if (fits(ivf_pq - lists)) {
    AutoChoice c{builtin_recipe("ivf-pq", dim), "", ivf_pq - lists, true};
    c.reason = "ivf-pq on disk for " + size + ": even compressed codes would need " + detail::human_bytes(ivf_pq) +
               ", so the inverted lists go to an .ivfdata file memory-mapped at search (in memory: " +
               detail::human_bytes(c.estimated_bytes) + ", " + budget + ")";
    return c;
  }
  throw Error("", size + " need about " + detail::human_bytes(ivf_pq - lists) +
                      " for the IVF-PQ quantizer and codebooks alone, over " + budget,
              "raise --max-memory or index fewer vectors");
}

}  // namespace invp::index
