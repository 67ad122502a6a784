// EmbeddingWriter: chunk files under "OUT.partial/" until finish() assembles OUT.
#include <invp/core/clock.h>
#include <invp/core/atomic_file.h>
#include <invp/core/error.h>
#include <invp/core/lock_file.h>
#include <invp/core/log.h>
#include <invp/store/embedding_store.h>
#include <invp/store/h5_io.h>
#include <invp/store/row_buffer.h>

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using nlohmann::json;

namespace invp::store {
namespace {

constexpr const char* kManifestFormat = "invp.embedding-chunks";
constexpr int kManifestVersion = 1;
constexpr const char* kManifestName = "manifest.json";

std::string chunk_name(int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "chunk-%06lld.bin", static_cast<long long>(i));
  return buf;
}

// The keys that decide whether stored chunks can be continued.
json identity(const StoreMeta& m, int64_t chunk_rows) {
  return {{"format", kManifestFormat},   {"version", kManifestVersion},
          {"dim", m.dim},                {"model_hash", m.model_hash},
          {"source", m.source},          {"precision", m.precision},
          {"features", m.features},
          {"shard", m.shard},
          {"chunk_rows", chunk_rows},
          {"with_embeddings", m.with_embeddings}};
}

// Removes "OUT.tmp.<pid>" files left by a finish() that was killed (their process is gone).
void remove_stale_temps(const std::string& out) {
  const fs::path p(out);
  const std::string prefix = p.filename().string() + ".tmp.";
  std::error_code ec;
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string pid = name.substr(prefix.size());
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos || pid.size() > 9) continue;
    if (::kill(pid_t(std::stol(pid)), 0) == 0 || errno != ESRCH) continue;
    std::error_code ec2;
    fs::remove(e.path(), ec2);
  }
}

}  // namespace

struct EmbeddingWriter::Impl {
  std::unique_ptr<DirLock> lock;  // one writer per output file
  std::string out, partial;
  StoreMeta meta;
  int64_t chunk_rows = 0;
  int64_t chunks = 0;   // complete chunk files on disk
  int64_t resumed = 0;  // rows found on disk at construction
  int64_t next_id = 0;
  detail::RowBuffer buf;
  bool spent = false;

  std::string chunk_path(int64_t i) const { return (fs::path(partial) / chunk_name(i)).string(); }
  std::string manifest_path() const { return (fs::path(partial) / kManifestName).string(); }
  bool try_resume(bool keep_created);
  void start_fresh();
  void flush_chunk();
};

// Continues a matching OUT.partial: keeps its leading run of sound chunks, deletes the rest.
bool EmbeddingWriter::Impl::try_resume(bool keep_created) {
  if (!fs::is_directory(partial)) {
    log::warn(partial + " is not a directory; replacing it");
    return false;
  }
  json m;
  try {
    std::ifstream f(manifest_path());
    if (!f) throw std::runtime_error("no manifest");
    m = json::parse(f);
  } catch (const std::exception&) {
    log::warn(partial + " has no readable manifest; starting afresh");
    return false;
  }
  const json want = identity(meta, chunk_rows);
  for (const auto& [key, value] : want.items()) {
    if (!m.contains(key) || m[key] != value) {
      log::warn(partial + " was made with another " + key + "; starting afresh");
      return false;
    }
  }
  if (!keep_created && m.contains("created") && m["created"].is_string())
    meta.created = m["created"].get<std::string>();

  std::set<std::string> keep = {kManifestName};
  detail::RowBuffer chunk;
  for (;; ++chunks) {
    const std::string p = chunk_path(chunks);
    if (!fs::exists(p)) break;
    const std::string why = detail::read_chunk(p, chunks * chunk_rows, chunk_rows, meta.dim,
                                               meta.with_embeddings, &chunk);
    if (!why.empty()) {
      log::warn("dropping damaged chunk " + p + " (" + why + "); it will be redone");
      break;
    }
    for (int64_t id : chunk.ids) next_id = std::max(next_id, id + 1);
    keep.insert(chunk_name(chunks));
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(partial, ec)) {
    if (keep.count(e.path().filename().string())) continue;
    std::error_code ec2;
    fs::remove_all(e.path(), ec2);
    if (ec2) throw Error(e.path().string(), "cannot remove stale file: " + ec2.message());
  }
  resumed = chunks * chunk_rows;
  return true;
}

void EmbeddingWriter::Impl::start_fresh() {
  std::error_code ec;
  fs::remove_all(partial, ec);
  if (ec) throw Error(partial, "cannot remove: " + ec.message());
  fs::create_directories(partial, ec);
  if (ec) throw Error(partial, "cannot create directory: " + ec.message(), "check permissions and free space");
  json m = identity(meta, chunk_rows);
  m["created"] = meta.created;
  m["out"] = out;
  write_file_atomically(manifest_path(), m.dump(2) + "\n");
}

void EmbeddingWriter::Impl::flush_chunk() {
  write_file_atomically(chunk_path(chunks), detail::encode_chunk(buf, chunks * chunk_rows));
  ++chunks;
  buf.clear();
}

EmbeddingWriter::EmbeddingWriter(std::string out, StoreMeta meta, int64_t chunk_rows) : impl_(new Impl) {
  try {
    Impl& w = *impl_;
    w.out = std::move(out);
    w.partial = w.out + ".partial";
    w.lock = DirLock::for_file(w.out);
    w.meta = std::move(meta);
    w.chunk_rows = chunk_rows;
    if (chunk_rows < 1) throw Error(w.out, "chunk size must be at least 1 row");
    if (w.meta.dim < 0 || w.meta.dim > detail::kMaxDim || (w.meta.with_embeddings && w.meta.dim == 0))
      throw Error(w.out, "invalid embedding dimension " + std::to_string(w.meta.dim));
    const bool keep_created = !w.meta.created.empty();
    if (!keep_created) w.meta.created = utc_now_iso();
    remove_stale_temps(w.out);
    w.buf.with_embeddings = w.meta.with_embeddings;
    w.buf.dim = w.meta.dim;
    if (!(fs::exists(w.partial) && w.try_resume(keep_created))) {
      w.chunks = w.resumed = w.next_id = 0;
      w.start_fresh();
    }
  } catch (...) {
    delete impl_;
    throw;
  }
}

EmbeddingWriter::~EmbeddingWriter() { delete impl_; }

int64_t EmbeddingWriter::resume_rows() const { return impl_->resumed; }

int64_t EmbeddingWriter::next_id() const { return impl_->next_id; }

void EmbeddingWriter::append(const Rows& rows) {
  Impl& w = *impl_;
  if (w.spent) throw Error(w.out, "internal: append after finish");
  detail::check_rows(rows, w.meta.with_embeddings ? w.meta.dim : 0, w.out);
  at::Tensor emb;
  if (w.meta.with_embeddings) emb = rows.embeddings.to(at::kCPU, at::kFloat).contiguous();
  const float* e = emb.defined() ? emb.data_ptr<float>() : nullptr;
  for (int64_t from = 0; from < rows.size();) {
    const int64_t n = std::min(w.chunk_rows - w.buf.size(), rows.size() - from);
    w.buf.take(rows, e, from, n);
    from += n;
    if (w.buf.size() == w.chunk_rows) w.flush_chunk();
  }
  for (int64_t id : rows.ids) w.next_id = std::max(w.next_id, id + 1);
}

void EmbeddingWriter::finish() {
  Impl& w = *impl_;
  if (w.spent) throw Error(w.out, "internal: finish called twice");
  const int64_t total = w.chunks * w.chunk_rows + w.buf.size();
  write_atomically(w.out, [&](const std::string& tmp) {
    detail::StoreFileWriter file(tmp, w.out, w.meta, total);
    detail::RowBuffer chunk;
    for (int64_t i = 0; i < w.chunks; ++i) {
      const std::string why = detail::read_chunk(w.chunk_path(i), i * w.chunk_rows, w.chunk_rows, w.meta.dim,
                                                 w.meta.with_embeddings, &chunk);
      if (!why.empty())
        throw Error(w.chunk_path(i), "damaged after it was written: " + why,
                    "run again: the damaged chunk is redone");
      file.write(chunk.span());
    }
    file.write(w.buf.span());
    file.close();
  });
  w.spent = true;
  w.buf.clear();
  std::error_code ec;
  fs::remove_all(w.partial, ec);
  if (ec) log::warn("cannot remove " + w.partial + ": " + ec.message());
  w.lock.reset();  // the output is complete: the next writer may start
}

}  // namespace invp::store
