// Internal to store/: rows held in plain arrays (the writer's buffer, a decoded chunk) and the
// chunk files of "OUT.partial/". A chunk file is machine-local scratch (native byte order):
//   80-byte header: magic "INVPCHK1", u32 version, u32 flags (1 = embeddings),
//                   i64 first_row, i64 rows, i64 dim, i64 payload bytes, 32 hex XXH3-128
//   payload: f32 embeddings[rows × dim] (when flagged), i64 ids[rows], i32 labels[rows],
//            u32 path_bytes[rows], then the path bytes back to back.
// Any mismatch (size, header, checksum, lengths) marks the chunk damaged; it is never trusted.
#pragma once
#include <invp/store/embedding_store.h>
#include <invp/store/h5_io.h>

#include <cstdint>
#include <string>
#include <vector>

namespace invp::store::detail {

constexpr int64_t kMaxDim = int64_t(1) << 20;   // 4 MiB per row: far above any embedding
constexpr int64_t kMaxRows = int64_t(1) << 40;  // sanity bound on a file's row count

struct RowBuffer {
  bool with_embeddings = true;
  int64_t dim = 0;
  std::vector<float> embeddings;
  std::vector<int64_t> ids;
  std::vector<int32_t> labels;
  std::vector<std::string> paths;

  int64_t size() const { return int64_t(ids.size()); }
  void clear();
  RowSpan span() const;
  // Appends rows [from, from + n) of `rows`, whose embeddings (if used) are `emb`, a
  // contiguous float32 n × dim CPU buffer.
  void take(const Rows& rows, const float* emb, int64_t from, int64_t n);
};

// Throws invp::Error(file, …) unless the vectors of `rows` agree in length and, when
// `need_dim` > 0, rows.embeddings is a defined n × need_dim floating tensor.
void check_rows(const Rows& rows, int64_t need_dim, const std::string& file);

std::string encode_chunk(const RowBuffer& rows, int64_t first_row);

// Reads and checks a chunk file against what it must hold. Returns "" and fills `out`, or
// the reason it is damaged.
std::string read_chunk(const std::string& path, int64_t first_row, int64_t rows, int64_t dim,
                       bool with_embeddings, RowBuffer* out);

}  // namespace invp::store::detail
