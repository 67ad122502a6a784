#include <invp/core/clock.h>
#include <invp/core/error.h>
#include <invp/core/lock_file.h>
#include <invp/core/log.h>
#include <invp/search/index_dir_detail.h>
#include <invp/search/index_edit.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace invp::search {
namespace fs = std::filesystem;
using namespace detail;

namespace {

// A data file of the previous generation under the new generation's name, without copying
// bytes where the file system allows (files are never written in place, so sharing is safe).
void link_or_copy(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::remove(to, ec);
  fs::create_hard_link(from, to, ec);
  if (ec) copy_atomically(from, to);
}

// The rows of block B whose ids are not in DROP (sorted).
store::Rows without(const store::Rows& b, const std::vector<int64_t>& drop) {
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < b.size(); ++i)
    if (!std::binary_search(drop.begin(), drop.end(), b.ids[size_t(i)])) keep.push_back(i);
  if (int64_t(keep.size()) == b.size()) return b;
  store::Rows r;
  for (int64_t i : keep) {
    r.ids.push_back(b.ids[size_t(i)]);
    r.paths.push_back(b.paths[size_t(i)]);
    r.labels.push_back(b.labels[size_t(i)]);
  }
  if (b.embeddings.defined())
    r.embeddings = b.embeddings.index_select(0, torch::tensor(keep, torch::kLong)).contiguous();
  return r;
}

// meta-<gen>.h5 from the current metadata without the ids in DROP (sorted).
void write_meta_without(IndexHandle& h, const std::string& out, const std::vector<int64_t>& drop) {
  store::EmbeddingWriter w(out, h.meta().meta(), kBlockRows);
  for (int64_t start = 0; start < h.meta().size(); start += kBlockRows)
    w.append(without(h.meta().read(start, std::min(kBlockRows, h.meta().size() - start)), drop));
  w.finish();
}

bool parse_id(const std::string& s, int64_t* out) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 18) return false;
  *out = std::stoll(s);
  return true;
}

}  // namespace

RemoveReport remove_from_index(const std::string& dir, std::vector<int64_t> ids) {
  const auto t0 = std::chrono::steady_clock::now();
  DirLock lock(dir);
  IndexInfo info = read_index_info(dir);
  remove_leftovers(dir, info);
  IndexHandle h(dir);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::vector<int64_t> present;
  for (int64_t id : ids)
    if (h.row_of(id) >= 0) present.push_back(id);
  RemoveReport r;
  r.missing = int64_t(ids.size() - present.size());
  r.size = info.size;
  r.tombstones = info.tombstones;
  r.generation = info.generation;
  if (present.empty()) return r;
  const int old_gen = info.generation, gen = old_gen + 1;
  const auto ipath = (fs::path(dir) / index_file(gen)).string();
  const auto mpath = (fs::path(dir) / meta_file(gen)).string();
  auto kept = info.files;
  info.files.clear();
  for (const auto& [name, rec] : kept)
    if (name == "trained.faiss" || name == info.ivfdata || name == info.added) info.files[name] = rec;
  r.in_place = h.ann().can_remove() && info.added.empty();
  if (r.in_place) {
    const int64_t n = h.ann().remove(present);
    if (n != int64_t(present.size()))
      throw Error(dir, "the FAISS index held " + std::to_string(n) + " of the " + std::to_string(present.size()) +
                           " ids its metadata has", "rebuild the index");
    h.ann().write(ipath);
    info.files[index_file(gen)] = record_of(ipath);
  } else {
    link_or_copy((fs::path(dir) / index_file(old_gen)).string(), ipath);
    info.files[index_file(gen)] = kept.at(index_file(old_gen));
    info.tombstones += int64_t(present.size());
  }
  write_meta_without(h, mpath, present);
  info.files[meta_file(gen)] = record_of(mpath);
  info.generation = gen;
  info.size -= int64_t(present.size());
  commit(dir, info);
  r.removed = int64_t(present.size());
  r.size = info.size;
  r.tombstones = info.tombstones;
  r.generation = gen;
  r.seconds = seconds_since(t0);
  return r;
}

CompactReport compact_index(const std::string& dir) {
  const auto t0 = std::chrono::steady_clock::now();
  DirLock lock(dir);
  IndexInfo info = read_index_info(dir);
  remove_leftovers(dir, info);
  CompactReport r{0, info.size, info.generation, 0};
  if (info.tombstones == 0) return r;
  if (!info.ivfdata.empty())
    throw Error(dir, "is an on-disk index; compacting rewrites its lists",
                "rebuild it: invp index build --on-disk -e " + (fs::path(dir) / meta_file(info.generation)).string());
  IndexHandle h(dir);
  auto& reader = h.meta();
  index::AnnIndex ann(info.recipe, info.dim, info.size);
  train_ann(ann, reader, info.recipe, 0);
  for (int64_t start = 0; start < reader.size(); start += kBlockRows) {
    auto b = reader.read(start, std::min(kBlockRows, reader.size() - start));
    ann.add(b.embeddings, torch::tensor(b.ids, torch::kLong));
  }
  if (!info.search_params.empty()) ann.set_search_params(info.search_params);
  const int gen = info.generation + 1;
  const auto ipath = (fs::path(dir) / index_file(gen)).string();
  const auto mpath = (fs::path(dir) / meta_file(gen)).string();
  ann.write(ipath);
  link_or_copy((fs::path(dir) / meta_file(info.generation)).string(), mpath);
  auto kept = info.files;
  info.files.clear();
  if (kept.count("trained.faiss")) info.files["trained.faiss"] = kept.at("trained.faiss");
  info.files[index_file(gen)] = record_of(ipath);
  info.files[meta_file(gen)] = kept.at(meta_file(info.generation));
  r.dropped = info.tombstones;
  info.tombstones = 0;
  info.generation = gen;
  commit(dir, info);
  r.generation = gen;
  r.seconds = seconds_since(t0);
  return r;
}

std::vector<int64_t> read_id_list(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot open the id list");
  std::vector<int64_t> out;
  std::string line;
  for (int no = 1; std::getline(in, line); ++no) {
    line = line.substr(0, line.find('#'));
    std::replace(line.begin(), line.end(), ',', ' ');
    std::istringstream words(line);
    for (std::string w; words >> w;) {
      int64_t id = 0;
      if (!parse_id(w, &id)) throw Error(path + ":" + std::to_string(no), "'" + w + "' is not an id", "ids are whole numbers ≥ 0");
      out.push_back(id);
    }
  }
  return out;
}

std::vector<int64_t> dedup_report_duplicates(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot open the dedup report");
  std::vector<int64_t> out;
  try {
    const auto j = nlohmann::json::parse(in);
    for (const auto& g : j.at("groups")) {
      const int64_t rep = g.at("representative").get<int64_t>();
      for (const auto& item : g.at("items"))
        if (item.at("id").get<int64_t>() != rep) out.push_back(item.at("id").get<int64_t>());
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(path, std::string("not a dedup report (invp --json dedup): ") + e.what());
  }
  return out;
}

int64_t apply_label_csv(const std::string& csv, store::Rows& rows, std::vector<std::string>& categories) {
  std::ifstream in(csv);
  if (!in) throw Error(csv, "cannot open the labels file");
  std::map<std::string, int32_t> by_path;
  std::string line;
  for (int no = 1; std::getline(in, line); ++no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (no == 1 && line == "path,label")) continue;
    const size_t comma = line.rfind(',');
    const std::string where = csv + ":" + std::to_string(no);
    if (comma == std::string::npos || comma == 0 || comma + 1 == line.size())
      throw Error(where, "expected path,label", "one item a line; the label is a category name or a number");
    const std::string path = line.substr(0, comma), label = line.substr(comma + 1);
    int64_t number = 0;
    int32_t value = 0;
    if (parse_id(label, &number)) {
      if (number > 1000000) throw Error(where, "label " + label + " out of range");
      value = int32_t(number);
    } else {
      auto it = std::find(categories.begin(), categories.end(), label);
      value = int32_t(it - categories.begin());
      if (it == categories.end()) categories.push_back(label);
    }
    by_path[path] = value;
  }
  int64_t labelled = 0;
  for (int64_t i = 0; i < rows.size(); ++i) {
    const std::string& p = rows.paths[size_t(i)];
    auto it = by_path.find(p);
    for (size_t at = p.find('/'); it == by_path.end() && at != std::string::npos; at = p.find('/', at + 1))
      it = by_path.find(p.substr(at + 1));
    if (it == by_path.end()) continue;
    rows.labels[size_t(i)] = it->second;
    ++labelled;
  }
  return labelled;
}

}  // namespace invp::search
