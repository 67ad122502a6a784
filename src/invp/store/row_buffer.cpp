#include <invp/core/error.h>
#include <invp/core/hash.h>
#include <invp/store/row_buffer.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace invp::store::detail {
namespace {

constexpr char kMagic[8] = {'I', 'N', 'V', 'P', 'C', 'H', 'K', '1'};
constexpr uint32_t kChunkVersion = 1;
constexpr uint32_t kFlagEmbeddings = 1;

struct ChunkHeader {
  char magic[8];
  uint32_t version;
  uint32_t flags;
  int64_t first_row;
  int64_t rows;
  int64_t dim;
  int64_t payload_bytes;
  char hash[32];
};
static_assert(sizeof(ChunkHeader) == 80, "chunk header layout");

template <class T>
void put(std::string& s, const T* p, size_t n) {
  s.append(reinterpret_cast<const char*>(p), n * sizeof(T));
}

// Copies n values of T out of [pos, end) or returns false when too short.
template <class T>
bool get(const char*& pos, const char* end, T* out, size_t n) {
  const size_t bytes = n * sizeof(T);
  if (size_t(end - pos) < bytes) return false;
  if (bytes) std::memcpy(out, pos, bytes);
  pos += bytes;
  return true;
}

std::string shape_of(const at::Tensor& t) {
  std::string s = std::string(c10::toString(t.scalar_type())) + " [";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? " x " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace

void RowBuffer::clear() {
  embeddings.clear();
  ids.clear();
  labels.clear();
  paths.clear();
}

RowSpan RowBuffer::span() const {
  RowSpan s;
  s.n = size();
  s.embeddings = with_embeddings ? embeddings.data() : nullptr;
  s.ids = ids.data();
  s.labels = labels.data();
  s.paths = paths.data();
  return s;
}

void RowBuffer::take(const Rows& rows, const float* emb, int64_t from, int64_t n) {
  if (with_embeddings) embeddings.insert(embeddings.end(), emb + from * dim, emb + (from + n) * dim);
  ids.insert(ids.end(), rows.ids.begin() + from, rows.ids.begin() + from + n);
  labels.insert(labels.end(), rows.labels.begin() + from, rows.labels.begin() + from + n);
  paths.insert(paths.end(), rows.paths.begin() + from, rows.paths.begin() + from + n);
}

void check_rows(const Rows& rows, int64_t need_dim, const std::string& file) {
  const int64_t n = rows.size();
  if (int64_t(rows.paths.size()) != n || int64_t(rows.labels.size()) != n)
    throw Error(file, "rows disagree in length: " + std::to_string(n) + " ids, " +
                          std::to_string(rows.paths.size()) + " paths, " +
                          std::to_string(rows.labels.size()) + " labels");
  if (need_dim <= 0) return;
  const auto& e = rows.embeddings;
  if (!e.defined()) throw Error(file, "rows without embeddings given to an embeddings file");
  if (e.dim() != 2 || e.size(0) != n || e.size(1) != need_dim || !e.is_floating_point())
    throw Error(file, "embeddings must be a float tensor of " + std::to_string(n) + " x " +
                          std::to_string(need_dim) + ", got " + shape_of(e));
}

std::string encode_chunk(const RowBuffer& rows, int64_t first_row) {
  const int64_t n = rows.size();
  std::string payload;
  if (rows.with_embeddings) put(payload, rows.embeddings.data(), rows.embeddings.size());
  put(payload, rows.ids.data(), rows.ids.size());
  put(payload, rows.labels.data(), rows.labels.size());
  for (const auto& p : rows.paths) {
    const uint32_t len = uint32_t(p.size());
    put(payload, &len, 1);
  }
  for (const auto& p : rows.paths) payload += p;

  ChunkHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kChunkVersion;
  h.flags = rows.with_embeddings ? kFlagEmbeddings : 0;
  h.first_row = first_row;
  h.rows = n;
  h.dim = rows.dim;
  h.payload_bytes = int64_t(payload.size());
  const std::string hash = hash_string(payload);
  std::memcpy(h.hash, hash.data(), sizeof h.hash);
  std::string out(reinterpret_cast<const char*>(&h), sizeof h);
  return out + payload;
}

std::string read_chunk(const std::string& path, int64_t first_row, int64_t rows, int64_t dim,
                       bool with_embeddings, RowBuffer* out) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return "cannot stat: " + ec.message();
  if (size < sizeof(ChunkHeader)) return "truncated header";
  std::ifstream f(path, std::ios::binary);
  ChunkHeader h{};
  if (!f.read(reinterpret_cast<char*>(&h), sizeof h)) return "cannot read header";
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.version != kChunkVersion) return "not a chunk file";
  if (h.flags != (with_embeddings ? kFlagEmbeddings : 0) || h.dim != dim) return "made for another layout";
  if (h.first_row != first_row || h.rows != rows) return "holds other rows than expected";
  if (h.payload_bytes < 0 || uint64_t(h.payload_bytes) != size - sizeof h) return "truncated or padded";
  const int64_t fixed = rows * ((with_embeddings ? dim * 4 : 0) + 8 + 4 + 4);
  if (h.payload_bytes < fixed) return "too short for its rows";

  std::string payload(size_t(h.payload_bytes), '\0');
  if (!f.read(payload.data(), std::streamsize(payload.size()))) return "cannot read payload";
  if (hash_string(payload).compare(0, 32, h.hash, 32) != 0) return "checksum mismatch";

  out->with_embeddings = with_embeddings;
  out->dim = dim;
  out->embeddings.resize(with_embeddings ? size_t(rows * dim) : 0);
  out->ids.resize(size_t(rows));
  out->labels.resize(size_t(rows));
  std::vector<uint32_t> lens(static_cast<size_t>(rows));
  const char* pos = payload.data();
  const char* end = pos + payload.size();
  bool ok = get(pos, end, out->embeddings.data(), out->embeddings.size()) &&
            get(pos, end, out->ids.data(), out->ids.size()) &&
            get(pos, end, out->labels.data(), out->labels.size()) && get(pos, end, lens.data(), lens.size());
  if (!ok) return "too short for its rows";
  out->paths.resize(size_t(rows));
  for (size_t i = 0; i < lens.size(); ++i) {
    if (size_t(end - pos) < lens[i]) return "path bytes missing";
    out->paths[i].assign(pos, lens[i]);
    pos += lens[i];
  }
  if (pos != end) return "trailing bytes";
  return "";
}

}  // namespace invp::store::detail
