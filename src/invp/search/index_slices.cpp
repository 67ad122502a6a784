// Train once, fill in slices, merge (in memory or on disk), and adds to on-disk indexes.
// FAISS does the index work (index stage: merge_ivf_slices); this file keeps the directories:
// what each one records, the checks that slices belong together, and commits.
#include <invp/core/clock.h>
#include <invp/core/error.h>
#include <invp/core/hash.h>
#include <invp/core/lock_file.h>
#include <invp/core/log.h>
#include <invp/model/model_io.h>
#include <invp/search/index_dir.h>
#include <invp/search/index_dir_detail.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>

#include <unistd.h>

namespace invp::search {
namespace fs = std::filesystem;
using namespace detail;

namespace {
std::string in(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// Generation for a new write into DIR (under its lock): one past a readable index.json.
int next_generation(const std::string& dir) {
  if (!fs::exists(fs::path(dir) / "index.json")) return 1;
  try {
    auto old = read_index_info(dir);
    remove_leftovers(dir, old);
    return old.generation + 1;
  } catch (const Error&) {
    return 1;
  }
}

index::CheckedFile checked(const std::string& dir, const IndexInfo& info, const std::string& name) {
  const auto it = info.files.find(name);
  if (it == info.files.end()) throw Error(in(dir, name), "not named in index.json", "rebuild it");
  return {in(dir, name), it->second.bytes, it->second.xxh3};
}

// model.pt + model.json from one directory into another, when it has them.
void copy_model(const std::string& from_dir, bool has, const std::string& dir, IndexInfo& info) {
  if (!has) return;
  copy_atomically(in(from_dir, "model.json"), in(dir, "model.json"));
  copy_atomically(in(from_dir, "model.pt"), in(dir, "model.pt"));
  info.has_model = true;
}

// Copies the recorded model into DIR when it is the one that made the embeddings.
void copy_recorded_model(const store::StoreMeta& m, const std::string& dir, IndexInfo& info) {
  if (m.model_path.empty() || !fs::exists(m.model_path)) return;
  if (!m.model_hash.empty() && hash_file(m.model_path) != m.model_hash) return;
  copy_atomically(model::json_path_for(m.model_path), in(dir, "model.json"));
  copy_atomically(m.model_path, in(dir, "model.pt"));
  info.has_model = true;
}

IndexInfo train_with(const store::EmbeddingReader& reader, const index::Recipe& recipe, const std::string& reason,
                     int64_t expected_n, const std::string& dir, uint64_t seed) {
  auto t0 = std::chrono::steady_clock::now();
  index::AnnIndex ann(recipe, reader.dim(), expected_n);
  if (!ann.is_ivf())
    throw Error(recipe.name, "is not an IVF recipe: only IVF indexes are filled in slices and merged",
                "use ivf-flat or ivf-pq");
  train_ann(ann, reader, recipe, seed);
  DirLock lock(dir);
  IndexInfo info;
  info.kind = "trained";
  info.generation = next_generation(dir);
  info.recipe = recipe;
  info.factory = ann.factory();
  info.choice_reason = reason;
  info.dim = reader.dim();
  info.model_hash = reader.meta().model_hash;
  info.precision = reader.meta().precision;
  info.features = reader.meta().features;
  info.search_params = ann.search_params();
  info.created = utc_now_iso();
  copy_recorded_model(reader.meta(), dir, info);
  const auto ipath = in(dir, index_file(info.generation));
  ann.write(ipath);
  info.files[index_file(info.generation)] = record_of(ipath);
  info.trained_hash = info.files[index_file(info.generation)].xxh3;
  info.build_seconds = seconds_since(t0);
  commit(dir, info);
  return info;
}

// Adds rows [start, start+count) of reader to a copy of the trained index; returns the last id.
int64_t fill_rows(index::AnnIndex& ann, const store::EmbeddingReader& reader, int64_t start, int64_t count,
                  int64_t last, const std::string& file) {
  for (int64_t s = start; s < start + count; s += kBlockRows) {
    auto rows = reader.read(s, std::min(kBlockRows, start + count - s));
    for (int64_t id : rows.ids) {
      if (id <= last) throw Error(file, "/ids must be increasing and unique (id " + std::to_string(id) + ")");
      last = id;
    }
    ann.add(rows.embeddings, torch::from_blob(rows.ids.data(), {rows.size()}, torch::kLong).clone());
  }
  return last;
}

// Writes the merged index, its vectors file (write_meta) and trained.faiss into DIR as a new
// generation, tunes it on the whole collection and commits. `info` arrives with the recipe,
// model and source filled in.
BuildReport finish_merge(const index::CheckedFile& trained, const std::vector<index::CheckedFile>& slices,
                         const std::function<void(const std::string&)>& write_meta, const std::string& dir,
                         const BuildOptions& opts, IndexInfo info, std::chrono::steady_clock::time_point t0) {
  DirLock lock(dir);
  const int gen = next_generation(dir);
  info.kind = "index";
  info.generation = gen;
  info.files.clear();
  const auto ipath = in(dir, index_file(gen)), mpath = in(dir, meta_file(gen));
  info.ivfdata = opts.on_disk ? lists_file(gen) : "";
  info.added.clear();
  info.size = index::merge_ivf_slices(trained, slices, ipath, opts.on_disk ? in(dir, info.ivfdata) : "");
  write_meta(mpath);
  copy_atomically(trained.path, in(dir, "trained.faiss"));
  info.files[index_file(gen)] = record_of(ipath);
  info.files[meta_file(gen)] = record_of(mpath);
  info.files["trained.faiss"] = record_of(in(dir, "trained.faiss"));
  if (opts.on_disk) info.files[info.ivfdata] = record_of(in(dir, info.ivfdata));

  // Tuning on the whole index: held-out queries from the vectors file against exact search.
  store::EmbeddingReader reader(mpath);
  if (reader.size() != info.size)
    throw Error(dir, "the slices hold " + std::to_string(info.size) + " vectors but their metadata " +
                         std::to_string(reader.size()), "rebuild the slices");
  auto ann = index::AnnIndex::read(ipath, info.files[index_file(gen)].bytes, info.files[index_file(gen)].xxh3);
  const auto sample = tune_into(info, ann, reader, opts);
  info.created = utc_now_iso();
  info.build_seconds = seconds_since(t0);
  commit(dir, info);
  finish_tuning(dir, info, sample, opts);
  return {info, info.build_seconds};
}
}  // namespace

IndexInfo train_index(const std::string& sample_h5, const std::string& dir, const TrainOptions& opts) {
  store::EmbeddingReader reader(sample_h5);
  if (!reader.has_embeddings() || reader.size() == 0) throw Error(sample_h5, "holds no embeddings to train on");
  const int64_t n = opts.expected_n > 0 ? opts.expected_n : reader.size();
  std::string reason;
  auto recipe = resolve_recipe(opts.recipe, n, reader.dim(), 0, &reason);
  // {nlist} follows the whole index's size but is capped by the sample actually trained on
  // (≥ 39 points per centroid), not by the size the index will reach.
  recipe.train_size = recipe.train_size > 0 ? std::min(recipe.train_size, reader.size()) : reader.size();
  return train_with(reader, recipe, reason, n, dir, opts.seed);
}

IndexInfo fill_slice(const std::string& trained_dir, const std::vector<std::string>& parts, const std::string& dir) {
  auto t0 = std::chrono::steady_clock::now();
  const IndexInfo t = read_index_info(trained_dir);
  if (t.kind != "trained")
    throw Error(trained_dir, "is not a trained index", "give the output of invp index train");
  if (parts.empty()) throw Error(dir, "no embeddings to fill the slice with");
  DirLock lock(dir);
  IndexInfo info = t;
  info.kind = "slice";
  info.generation = next_generation(dir);
  info.files.clear();
  info.has_model = false;
  const auto mpath = in(dir, meta_file(info.generation)), ipath = in(dir, index_file(info.generation));
  if (parts.size() == 1) copy_atomically(parts[0], mpath);
  else store::join_parts(parts, mpath);
  store::EmbeddingReader reader(mpath);
  if (!reader.has_embeddings()) throw Error(parts[0], "holds no /embeddings");
  if (reader.dim() != t.dim)
    throw Error(parts[0], "has dim " + std::to_string(reader.dim()) + ", the trained index " + std::to_string(t.dim));
  if (!t.model_hash.empty() && reader.meta().model_hash != t.model_hash)
    throw Error(parts[0], "was embedded with another model than the trained index " + trained_dir,
                "embed with the model the sample was embedded with");
  auto ann = index::AnnIndex::read(in(trained_dir, index_file(t.generation)), t.files.at(index_file(t.generation)).bytes,
                                   t.files.at(index_file(t.generation)).xxh3);
  info.next_id = fill_rows(ann, reader, 0, reader.size(), -1, parts[0]) + 1;
  info.size = ann.size();
  ann.write(ipath);
  copy_atomically(in(trained_dir, index_file(t.generation)), in(dir, "trained.faiss"));
  copy_model(trained_dir, t.has_model, dir, info);
  info.source.clear();
  for (const auto& p : parts) info.source += (info.source.empty() ? "" : ",") + fs::absolute(p).string();
  info.files[index_file(info.generation)] = record_of(ipath);
  info.files[meta_file(info.generation)] = record_of(mpath);
  info.files["trained.faiss"] = record_of(in(dir, "trained.faiss"));
  info.build_seconds = seconds_since(t0);
  info.created = utc_now_iso();
  commit(dir, info);
  return info;
}

BuildReport merge_slices(const std::vector<std::string>& slice_dirs, const std::string& dir, const BuildOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  if (slice_dirs.empty()) throw Error(dir, "no slices to merge");
  struct Slice {
    std::string dir;
    IndexInfo info;
    int64_t first = 0, last = -1;
  };
  std::vector<Slice> ss;
  for (const auto& d : slice_dirs) {
    Slice s{d, read_index_info(d)};
    const Slice& s0 = ss.empty() ? s : ss[0];
    if (s.info.kind != "slice")
      throw Error(d, "is not a slice (kind " + s.info.kind + ")", "give directories written by invp index build --trained");
    if (s.info.trained_hash != s0.info.trained_hash)
      throw Error(d, "was filled from another trained index than " + s0.dir, "merge slices of one invp index train");
    if (s.info.model_hash != s0.info.model_hash || s.info.dim != s0.info.dim)
      throw Error(d, "holds embeddings of another model than " + s0.dir, "embed every part with one model");
    store::EmbeddingReader m(in(d, meta_file(s.info.generation)));
    if (m.size() > 0) s.first = m.read(0, 1, false).ids[0], s.last = m.read(m.size() - 1, 1, false).ids[0];
    ss.push_back(std::move(s));
  }
  std::stable_sort(ss.begin(), ss.end(), [](const Slice& a, const Slice& b) { return a.first < b.first; });
  for (size_t i = 1; i < ss.size(); ++i)
    if (ss[i].last >= ss[i].first && ss[i - 1].last >= ss[i - 1].first && ss[i].first <= ss[i - 1].last)
      throw Error(ss[i].dir, "ids " + std::to_string(ss[i].first) + ".." + std::to_string(ss[i].last) + " overlap " +
                                 ss[i - 1].dir + "'s", "merge each slice once, from disjoint parts");
  std::vector<index::CheckedFile> files;
  std::vector<std::string> metas;
  IndexInfo info = ss[0].info;
  info.source.clear();
  info.next_id = 0;
  for (const auto& s : ss) {
    files.push_back(checked(s.dir, s.info, index_file(s.info.generation)));
    metas.push_back(in(s.dir, meta_file(s.info.generation)));
    info.next_id = std::max(info.next_id, s.info.next_id);
    info.source += (info.source.empty() ? "" : ",") + fs::absolute(s.dir).string();
  }
  info.choice_reason = "merged from " + std::to_string(ss.size()) + " slices" +
                       (opts.on_disk ? ", inverted lists on disk (memory-mapped)" : "");
  {
    DirLock lock(dir);  // the model files, before finish_merge takes the lock for the rest
    info.has_model = false;
    copy_model(ss[0].dir, ss[0].info.has_model, dir, info);
  }
  return finish_merge(checked(ss[0].dir, ss[0].info, "trained.faiss"), files,
                      [&](const std::string& mpath) { store::join_parts(metas, mpath); }, dir, opts, info, t0);
}

BuildReport build_on_disk(const std::string& embeddings_h5, const std::string& dir, const BuildOptions& opts,
                          const index::Recipe& recipe, const std::string& reason) {
  auto t0 = std::chrono::steady_clock::now();
  store::EmbeddingReader reader(embeddings_h5);
  const int64_t n = reader.size();
  // Scratch beside DIR (same file system, so nothing large crosses devices); removed at the end.
  const std::string work = fs::absolute(dir).lexically_normal().string() + ".slices." + std::to_string(::getpid());
  struct Scratch {
    std::string path;
    ~Scratch() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } scratch{work};
  fs::create_directories(work);
  const std::string trained_dir = in(work, "trained");
  IndexInfo t = train_with(reader, recipe, reason, n, trained_dir, opts.seed);
  const auto tfile = checked(trained_dir, t, index_file(t.generation));
  std::vector<index::CheckedFile> slices;
  int64_t last = -1;
  for (int64_t start = 0; start < n; start += opts.slice_rows) {
    auto ann = index::AnnIndex::read(tfile.path, tfile.bytes, tfile.xxh3);
    const std::string p = in(work, "slice-" + std::to_string(slices.size()) + ".faiss");
    last = fill_rows(ann, reader, start, std::min(opts.slice_rows, n - start), last, embeddings_h5);
    ann.write(p);
    auto rec = record_of(p);
    slices.push_back({p, rec.bytes, rec.xxh3});
    log::info("filled slice " + std::to_string(slices.size()) + " (" + std::to_string(ann.size()) + " vectors)");
  }
  IndexInfo info = t;
  info.next_id = last + 1;
  info.source = opts.source_label.empty() ? fs::absolute(embeddings_h5).string() : opts.source_label;
  info.has_model = false;
  {
    DirLock lock(dir);
    copy_model(trained_dir, t.has_model, dir, info);
  }
  auto o = opts;
  o.on_disk = true;
  return finish_merge(tfile, slices, [&](const std::string& mpath) { copy_atomically(embeddings_h5, mpath); }, dir, o,
                      info, t0);
}

void add_on_disk(const std::string& dir, IndexInfo& info, const store::Rows& add) {
  // The previous additions (or the empty trained index) plus the new rows, as one small slice.
  const auto from = checked(dir, info, info.added.empty() ? std::string("trained.faiss") : info.added);
  auto ann = index::AnnIndex::read(from.path, from.bytes, from.xxh3);
  if (!info.search_params.empty()) ann.set_search_params(info.search_params);
  ann.add(add.embeddings.contiguous(), torch::from_blob(const_cast<int64_t*>(add.ids.data()), {add.size()},
                                                        torch::kLong).clone());
  info.added = added_file(info.generation + 1);
  ann.write(in(dir, info.added));
}

}  // namespace invp::search
