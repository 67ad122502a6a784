#include <invp/core/atomic_file.h>
#include <invp/core/clock.h>
#include <invp/core/error.h>
#include <invp/core/hash.h>
#include <invp/core/lock_file.h>
#include <invp/core/log.h>
#include <invp/core/progress.h>
#include <invp/index/exact_knn.h>
#include <invp/model/model_io.h>
#include <invp/search/index_dir.h>
#include <invp/search/index_dir_detail.h>

#include <nlohmann/json.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <future>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <unordered_map>

#include <unistd.h>

namespace invp::search {
namespace fs = std::filesystem;
using nlohmann::json;

namespace detail {


std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "cannot open");
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string index_file(int gen) { return "index-" + std::to_string(gen) + ".faiss"; }
std::string meta_file(int gen) { return "meta-" + std::to_string(gen) + ".h5"; }
std::string lists_file(int gen) { return "lists-" + std::to_string(gen) + ".ivfdata"; }
std::string added_file(int gen) { return "added-" + std::to_string(gen) + ".faiss"; }

FileRecord record_of(const std::string& path) {
  return {int64_t(fs::file_size(path)), hash_file(path)};
}

void copy_atomically(const std::string& from, const std::string& to) {
  write_atomically(to, [&](const std::string& tmp) {
    std::error_code ec;
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error(to, "cannot copy " + from + ": " + ec.message(), "check free disk space");
  });
}

// Removes data files, temporaries and partial outputs that index.json does not name.
void remove_leftovers(const std::string& dir, const IndexInfo& keep) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    auto is = [&](const char* prefix, const char* ext) {
      return name.rfind(prefix, 0) == 0 && name.find(ext) != std::string::npos;
    };
    const bool data = is("index-", ".faiss") || is("meta-", ".h5") || is("lists-", ".ivfdata") ||
                      is("added-", ".faiss") || is("trained", ".faiss");
    const bool temp = name.find(".tmp.") != std::string::npos;
    if ((data || temp) && !keep.files.count(name)) {
      std::error_code ec2;
      fs::remove_all(e.path(), ec2);
    }
  }
}

void commit(const std::string& dir, IndexInfo& info) {
  info.updated = utc_now_iso();
  write_file_atomically((fs::path(dir) / "index.json").string(), info.to_json());
  remove_leftovers(dir, info);
}

// Sorted random sample of m distinct row numbers in [0, n): the first m steps of a Fisher-Yates
// shuffle of 0..n-1, with only the displaced entries stored (memory O(m), not O(n)).
std::vector<int64_t> sample_rows(int64_t n, int64_t m, uint64_t seed) {
  std::vector<int64_t> out;
  if (m >= n) {
    out.resize(size_t(std::max<int64_t>(n, 0)));
    for (int64_t i = 0; i < n; ++i) out[size_t(i)] = i;
    return out;
  }
  std::unordered_map<int64_t, int64_t> moved;  // position -> value, where it is not the position
  auto at = [&](int64_t p) {
    auto it = moved.find(p);
    return it == moved.end() ? p : it->second;
  };
  std::mt19937_64 rng(seed ^ 0x5eedULL);
  out.reserve(size_t(m));
  for (int64_t i = 0; i < m; ++i) {
    const int64_t j = i + int64_t(rng() % uint64_t(n - i));
    const int64_t vi = at(i), vj = at(j);
    out.push_back(vj);
    moved[j] = vi;  // position i is never read again
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Embeddings of the given sorted rows. A block holding many of them is read whole; a few are
// read run by run, so a tuning sample of a large file reads its rows, not the whole file.
torch::Tensor gather_rows(const store::EmbeddingReader& r, const std::vector<int64_t>& rows) {
  auto out = torch::empty({int64_t(rows.size()), r.dim()}, torch::kFloat32);
  for (size_t k = 0; k < rows.size();) {
    const int64_t start = rows[k] / kBlockRows * kBlockRows, end = std::min(start + kBlockRows, r.size());
    size_t e = k;
    while (e < rows.size() && rows[e] < end) ++e;
    if (e - k < size_t(kSparseRows)) {
      out.narrow(0, int64_t(k), int64_t(e - k)).copy_(r.read_embeddings({rows.begin() + int64_t(k), rows.begin() + int64_t(e)}));
    } else {
      auto block = r.read(start, end - start).embeddings;
      for (size_t i = k; i < e; ++i) out[int64_t(i)].copy_(block[rows[i] - start]);
    }
    k = e;
  }
  return out;
}

// Exact top-k ids of the queries over the whole file, streamed in blocks (memory O(Q·k)).
torch::Tensor exact_truth(const store::EmbeddingReader& r, const torch::Tensor& queries, int k) {
  torch::Tensor best_sim, best_id;
  for (int64_t start = 0; start < r.size(); start += kBlockRows) {
    auto rows = r.read(start, std::min(kBlockRows, r.size() - start));
    auto res = index::knn_inner_product(queries, rows.embeddings, int(std::min<int64_t>(k, rows.size())), false);
    auto ids = torch::from_blob(rows.ids.data(), {rows.size()}, torch::kLong).index_select(0, res.indices.flatten()).view(res.indices.sizes());
    if (!best_sim.defined()) {
      best_sim = res.similarities, best_id = ids;
    } else {
      auto s = torch::cat({best_sim, res.similarities}, 1), i = torch::cat({best_id, ids}, 1);
      auto top = s.topk(std::min<int64_t>(k, s.size(1)), 1);
      best_sim = std::get<0>(top);
      best_id = i.gather(1, std::get<1>(top));
    }
  }
  return best_id;
}

TuningSample tune_into(IndexInfo& info, index::AnnIndex& ann, const store::EmbeddingReader& reader,
                       const BuildOptions& opts) {
  const int64_t n = reader.size();
  const int k = int(std::min<int64_t>(opts.k, n));
  auto q = gather_rows(reader, sample_rows(n, std::min(opts.tune_queries, n), opts.seed + 1));
  auto truth = exact_truth(reader, q, k);
  index::TuneResult tuned;
  if (opts.rerank > k && reader.has_embeddings()) {
    // finish_tuning() tunes through the re-rank once the directory is committed; until then the
    // recipe's own setting stands (a sweep of the codes alone would be thrown away).
    tuned.params = ann.search_params();
    tuned.recall = index::recall_at_k(ann.search(q, k).indices, truth);
  } else {
    tuned = index::tune(ann, q, truth, k, opts.target_recall);
  }
  info.search_params = tuned.params;
  info.tuned_k = k;
  info.target_recall = opts.target_recall;
  info.recall = tuned.recall;
  info.queries_per_second = tuned.queries_per_second;
  info.rerank = opts.rerank;
  return {q, truth, k};
}

index::Recipe resolve_recipe(const std::string& spec, int64_t n, int64_t dim, int64_t max_memory,
                             std::string* reason, bool* on_disk) {
  if (spec == "auto") {
    auto c = index::choose_recipe(n, dim, max_memory);
    *reason = c.reason;
    if (on_disk) *on_disk = c.on_disk;
    return c.recipe;
  }
  auto names = index::builtin_recipe_names();
  if (std::find(names.begin(), names.end(), spec) != names.end()) {
    *reason = "recipe '" + spec + "' given";
    return index::builtin_recipe(spec, dim);
  }
  if (!fs::exists(spec))
    throw Error(spec, "no such recipe", "use auto, a built-in name (flat, hnsw, ivf-flat, ivf-pq) or a recipe file such as indexes/hnsw.toml");
  *reason = "recipe file " + spec;
  return index::load_recipe(spec);
}
void train_ann(index::AnnIndex& ann, const store::EmbeddingReader& reader, const index::Recipe& recipe,
               uint64_t seed) {
  const int64_t n = reader.size();
  if (!ann.is_trained()) {
    const int64_t m = recipe.train_size > 0 ? std::min(recipe.train_size, n) : n;
    log::info("training on " + std::to_string(m) + " vectors");
    auto sample = gather_rows(reader, sample_rows(n, m, seed));
    // OPQ/PQ training is many small parallel regions; with libgomp busy-waiting it runs much
    // slower on 2 threads than on 1 (docs/ARCHITECTURE.md, "Threads"): train on one.
    const bool pq = ann.factory().find("PQ") != std::string::npos;
    const int threads = omp_get_max_threads();
    if (pq) omp_set_num_threads(1);
    try {
      ann.train(sample);
    } catch (...) {
      omp_set_num_threads(threads);
      throw;
    }
    omp_set_num_threads(threads);
  }
}
}  // namespace detail
using namespace detail;

std::string IndexInfo::to_json() const {
  json files_j = json::object();
  for (auto& [name, f] : files) files_j[name] = {{"bytes", f.bytes}, {"xxh3", f.xxh3}};
  json j{{"format_version", kIndexFormatVersion},
         {"kind", kind},
         {"trained_hash", trained_hash},
         {"ivfdata", ivfdata},
         {"added", added},
         {"rerank", rerank},
         {"tombstones", tombstones},
         {"recipe", {{"name", recipe.name}, {"factory", recipe.factory}, {"metric", recipe.metric},
                     {"train_size", recipe.train_size}, {"search", recipe.search}}},
         {"factory", factory},
         {"choice_reason", choice_reason},
         {"metric", recipe.metric},
         {"dim", dim},
         {"size", size},
         {"next_id", next_id},
         {"generation", generation},
         {"model_hash", model_hash},
         {"precision", precision},
         {"features", features},
         {"model", has_model ? "model.pt" : ""},
         {"files", files_j},
         {"search_params", search_params},
         {"measured", {{"k", tuned_k}, {"target_recall", target_recall}, {"recall_at_k", recall},
                       {"queries_per_second", queries_per_second}, {"build_seconds", build_seconds},
                       {"rerank_recall_at_k", rerank_recall}}},
         {"source", source},
         {"created", created},
         {"updated", updated}};
  return j.dump(2) + "\n";
}

IndexInfo IndexInfo::from_json(const std::string& text, const std::string& file) {
  IndexInfo i;
  try {
    json j = json::parse(text);
    int v = j.at("format_version").get<int>();
    if (v != kIndexFormatVersion)
      throw Error(file, "index format version " + std::to_string(v) + " is not supported",
                  "rebuild the index with this invp");
    i.kind = j.value("kind", "index");
    i.trained_hash = j.value("trained_hash", "");
    i.ivfdata = j.value("ivfdata", "");
    i.added = j.value("added", "");
    i.rerank = j.value("rerank", 0);
    i.tombstones = j.value("tombstones", int64_t(0));
    auto& r = j.at("recipe");
    i.recipe.name = r.at("name").get<std::string>();
    i.recipe.factory = r.at("factory").get<std::string>();
    i.recipe.metric = r.at("metric").get<std::string>();
    i.recipe.train_size = r.at("train_size").get<int64_t>();
    i.recipe.search = r.at("search").get<std::map<std::string, double>>();
    i.factory = j.at("factory").get<std::string>();
    i.choice_reason = j.value("choice_reason", "");
    i.dim = j.at("dim").get<int64_t>();
    i.size = j.at("size").get<int64_t>();
    i.next_id = j.at("next_id").get<int64_t>();
    i.generation = j.at("generation").get<int>();
    i.model_hash = j.at("model_hash").get<std::string>();
    i.precision = j.value("precision", "");  // empty: index.json predates the key
    i.features = j.value("features", "head");
    i.has_model = !j.value("model", std::string()).empty();
    for (auto& [name, f] : j.at("files").items())
      i.files[name] = {f.at("bytes").get<int64_t>(), f.at("xxh3").get<std::string>()};
    i.search_params = j.at("search_params").get<std::map<std::string, double>>();
    auto& m = j.at("measured");
    i.tuned_k = m.at("k").get<int>();
    i.target_recall = m.at("target_recall").get<double>();
    i.recall = m.at("recall_at_k").get<double>();
    i.queries_per_second = m.at("queries_per_second").get<double>();
    i.build_seconds = m.value("build_seconds", 0.0);
    i.rerank_recall = m.value("rerank_recall_at_k", 0.0);
    i.source = j.value("source", "");
    i.created = j.value("created", "");
    i.updated = j.value("updated", "");
  } catch (const json::exception& e) {
    throw Error(file, std::string("invalid index.json: ") + e.what(), "rebuild the index");
  }
  const bool trained = i.kind == "trained";
  if (i.dim <= 0 || i.size < 0 || i.next_id < 0 || i.generation < 1 || i.rerank < 0 || i.tombstones < 0 ||
      (i.kind != "index" && !trained && i.kind != "slice") ||
      !i.files.count(index_file(i.generation)) || (!trained && !i.files.count(meta_file(i.generation))) ||
      (!i.ivfdata.empty() && !i.files.count(i.ivfdata)) || (!i.added.empty() && !i.files.count(i.added)))
    throw Error(file, "inconsistent index.json (dim, size, generation or files)", "rebuild the index");
  for (auto& [name, f] : i.files)
    if (name.find('/') != std::string::npos || name.find("..") != std::string::npos || f.bytes < 0)
      throw Error(file, "invalid file entry '" + name + "'");
  return i;
}

IndexInfo read_index_info(const std::string& dir) {
  auto path = (fs::path(dir) / "index.json").string();
  if (!fs::exists(dir)) throw Error(dir, "no such index directory", "build one with: invp index build");
  if (!fs::exists(path)) throw Error(dir, "not an index directory (no index.json)", "build one with: invp index build");
  IndexInfo info = IndexInfo::from_json(read_text(path), path);
  if (info.precision.empty()) {  // older index.json: the meta file's attribute says
    info.precision = "fp32";
    try {
      info.precision = store::EmbeddingReader((fs::path(dir) / meta_file(info.generation)).string())
                           .meta().precision;
    } catch (const Error&) {
      // A missing or damaged meta file is reported by whatever opens the index for use.
    }
  }
  return info;
}

BuildReport build_index(const std::string& embeddings_h5, const std::string& dir, const BuildOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  store::EmbeddingReader reader(embeddings_h5);
  if (!reader.has_embeddings()) throw Error(embeddings_h5, "holds no /embeddings");
  const int64_t n = reader.size(), d = reader.dim();
  if (n == 0) throw Error(embeddings_h5, "holds no rows", "embed a non-empty collection first");
  {
    // On-disk builds go train → slices → merge, each step taking DIR's lock itself.
    bool on_disk = opts.on_disk;
    std::string reason;
    auto recipe = resolve_recipe(opts.recipe, n, d, opts.max_memory, &reason, &on_disk);
    if (on_disk) {
      log::info(reason);
      return build_on_disk(embeddings_h5, dir, opts, recipe, reason);
    }
  }
  DirLock lock(dir);
  IndexInfo info;
  int gen = 1;
  if (fs::exists(fs::path(dir) / "index.json")) {
    try {
      auto old = read_index_info(dir);
      remove_leftovers(dir, old);
      gen = old.generation + 1;
    } catch (const Error&) {
      gen = 1;
    }
  }
  info.generation = gen;
  info.dim = d;
  info.model_hash = reader.meta().model_hash;
  info.precision = reader.meta().precision;
  info.features = reader.meta().features;
  info.source = opts.source_label.empty() ? fs::absolute(embeddings_h5).string() : opts.source_label;
  info.created = utc_now_iso();

  // The model travels with the index when we can find it and it is the one that made the file.
  std::string model = opts.model_pt.empty() ? reader.meta().model_path : opts.model_pt;
  if (!model.empty() && fs::exists(model)) {
    auto h = hash_file(model);
    if (!info.model_hash.empty() && h != info.model_hash)
      throw Error(model, "is not the model that made " + embeddings_h5 + " (hash differs)",
                  "pass the model used by invp embed with --model");
    copy_atomically(model::json_path_for(model), (fs::path(dir) / "model.json").string());
    copy_atomically(model, (fs::path(dir) / "model.pt").string());
    info.has_model = true;
  } else {
    if (!opts.model_pt.empty()) throw Error(opts.model_pt, "no such model file");
    log::warn("no model found for " + embeddings_h5 +
              ": the index answers --id queries only (pass --model to query by image)");
  }

  info.recipe = resolve_recipe(opts.recipe, n, d, opts.max_memory, &info.choice_reason, nullptr);
  index::AnnIndex ann(info.recipe, d, n);
  info.factory = ann.factory();
  log::info("index " + info.factory + " for " + std::to_string(n) + " x " + std::to_string(d) +
            ": " + info.choice_reason);
  train_ann(ann, reader, info.recipe, opts.seed);
  {
    Progress bar("add", (n + kBlockRows - 1) / kBlockRows, "vectors", double(kBlockRows));
    int64_t last = -1, b = 0;
    for (int64_t start = 0; start < n; start += kBlockRows) {
      auto rows = reader.read(start, std::min(kBlockRows, n - start));
      for (int64_t id : rows.ids) {
        if (id <= last) throw Error(embeddings_h5, "/ids must be increasing and unique (id " + std::to_string(id) + ")");
        last = id;
      }
      ann.add(rows.embeddings, torch::from_blob(rows.ids.data(), {rows.size()}, torch::kLong).clone());
      bar.update(++b);
    }
    bar.finish();
    info.next_id = last + 1;
  }
  info.size = ann.size();

  const auto sample = tune_into(info, ann, reader, opts);

  const auto ipath = (fs::path(dir) / index_file(gen)).string();
  const auto mpath = (fs::path(dir) / meta_file(gen)).string();
  ann.write(ipath);
  copy_atomically(embeddings_h5, mpath);
  info.files[index_file(gen)] = record_of(ipath);
  info.files[meta_file(gen)] = record_of(mpath);
  info.build_seconds = seconds_since(t0);
  commit(dir, info);
  finish_tuning(dir, info, sample, opts);
  return {info, info.build_seconds};
}

namespace {
// A joined copy of several parts, removed when it goes out of scope.
struct JoinedParts {
  std::string path;
  explicit JoinedParts(const std::vector<std::string>& parts, const std::string& near)
      : path(near + ".parts." + std::to_string(::getpid()) + ".h5") {
    store::join_parts(parts, path);
  }
  ~JoinedParts() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};
}  // namespace

BuildReport build_index(const std::vector<std::string>& parts, const std::string& dir, const BuildOptions& opts) {
  if (parts.size() == 1) return build_index(parts[0], dir, opts);
  JoinedParts joined(parts, fs::absolute(dir).lexically_normal().string());
  auto o = opts;
  for (const auto& p : parts) o.source_label += (o.source_label.empty() ? "" : ",") + fs::absolute(p).string();
  return build_index(joined.path, dir, o);
}

store::Rows read_parts(const std::vector<std::string>& parts) {
  if (parts.size() == 1) return store::EmbeddingReader(parts[0]).read_all();
  JoinedParts joined(parts, (fs::temp_directory_path() / "invp-add").string());
  return store::EmbeddingReader(joined.path).read_all();
}

AddReport add_to_index(const std::string& dir, const store::Rows& rows, const std::string& model_hash,
                       const std::vector<std::string>& categories) {
  auto t0 = std::chrono::steady_clock::now();
  DirLock lock(dir);
  IndexInfo info = read_index_info(dir);
  remove_leftovers(dir, info);  // what an interrupted add left behind
  if (!rows.embeddings.defined() || rows.size() == 0) throw Error(dir, "nothing to add");
  if (rows.embeddings.dim() != 2 || rows.embeddings.size(1) != info.dim)
    throw Error(dir, "dimension mismatch: index has " + std::to_string(info.dim) + ", new rows have " +
                         std::to_string(rows.embeddings.dim() == 2 ? rows.embeddings.size(1) : -1));
  if (!model_hash.empty() && !info.model_hash.empty() && model_hash != info.model_hash)
    throw Error(dir, "the new embeddings were made by another model than the index's",
                "embed them with the index's model.pt");
  IndexHandle h(dir);
  const int old_gen = info.generation, gen = old_gen + 1;
  store::Rows add = rows;
  for (int64_t i = 0; i < add.size(); ++i) add.ids[size_t(i)] = info.next_id + i;
  auto ids = torch::from_blob(add.ids.data(), {add.size()}, torch::kLong).clone();
  const auto ipath = (fs::path(dir) / index_file(gen)).string();
  const auto mpath = (fs::path(dir) / meta_file(gen)).string();
  auto kept = info.files;
  if (!info.ivfdata.empty()) {
    // The mapped lists stay as they are; the new vectors become (part of) the added slice.
    add_on_disk(dir, info, add);
    info.files.clear();
    copy_atomically((fs::path(dir) / index_file(old_gen)).string(), ipath);
    for (const auto& name : {std::string("trained.faiss"), info.ivfdata}) info.files[name] = kept.at(name);
    info.files[info.added] = record_of((fs::path(dir) / info.added).string());
  } else {
    info.files.clear();
    h.ann().add(add.embeddings.contiguous(), ids);
    h.ann().write(ipath);
    if (kept.count("trained.faiss")) info.files["trained.faiss"] = kept.at("trained.faiss");
  }
  // New generation: index file, then meta (old rows streamed, new ones appended), then commit.
  {
    auto meta = h.meta().meta();
    if (!categories.empty()) {
      if (categories.size() < meta.categories.size() ||
          !std::equal(meta.categories.begin(), meta.categories.end(), categories.begin()))
        throw Error(dir, "new categories must extend the index's list, not change it");
      meta.categories = categories;
    }
    store::EmbeddingWriter w(mpath, meta, kBlockRows);
    for (int64_t start = 0; start < h.meta().size(); start += kBlockRows)
      w.append(h.meta().read(start, std::min(kBlockRows, h.meta().size() - start)));
    w.append(add);
    w.finish();
  }
  info.generation = gen;
  info.files[index_file(gen)] = record_of(ipath);
  info.files[meta_file(gen)] = record_of(mpath);
  info.size += add.size();
  info.next_id += add.size();
  AddReport r{add.size(), add.ids.front(), info.size, 0};
  commit(dir, info);
  r.seconds = seconds_since(t0);
  return r;
}

}  // namespace invp::search
