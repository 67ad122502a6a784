// The HDF5 embedding store (the only stage that touches HDF5). Layout of embeddings.h5,
// plain datasets and attributes only, readable by any HDF5 reader (h5py, h5dump):
//   /embeddings  float32 N×D, row-major, rows L2-normalised (chunked along N)
//   /ids         int64 N      (0..N−1 in source order for a fresh embed)
//   /paths       variable-length UTF-8 strings, N ("<file>#<index>" for container items)
//   /labels      int32 N      (−1 = unknown)
//   /categories  variable-length UTF-8 strings, C (label → name; present, possibly empty)
//   root attributes: format_version (int32), dim (int64), model_hash (string),
//                    model_path (string), source (string), created (string, ISO-8601 UTC),
//                    precision (string: "fp32" or "bf16", the encoder's arithmetic; files
//                    written before it existed read as "fp32"), shard (string "i/N" when the
//                    file holds the i-th of N contiguous slices of the source, ids still the
//                    positions in the whole source; absent for a whole source),
//                    features (string: "head", the model's output, or "backbone", the pooled
//                    features before the projection head; files without it read as "head")
// Numbers are little-endian IEEE / two's complement; string datasets are variable-length
// UTF-8 (h5py: .asstr()), string attributes fixed-length UTF-8 (h5py: bytes, .decode()), so
// that reading metadata never trusts HDF5's global heap. No compound types, no filters.
// A metadata-only file is the same file without /embeddings (dim attribute kept).
// Every writer commits atomically (temp file + rename); every reader validates shapes and
// throws invp::Error naming the file for anything malformed (HDF5 exceptions never escape).
// Threads: HDF5 is serialised by a global lock; use these classes from one thread (never
// from loader workers), one object per thread at most.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace invp::store {

constexpr int kStoreFormatVersion = 1;

struct StoreMeta {
  int64_t dim = 0;
  std::string model_hash;
  std::string model_path;               // model.pt that made the file (may be empty)
  std::string source;
  std::string created;                  // filled by the writer when empty
  std::string precision = "fp32";       // how the encoder computed the rows: "fp32" or "bf16"
  std::string shard;                    // "i/N": the i-th of N slices of the source; "" = all of it
  std::string features = "head";        // "head" (the model's output) or "backbone" (pooled, before the head)
  std::vector<std::string> categories;  // label → name; may be empty
  // Whether the file holds /embeddings. Writers drop the embeddings of appended rows when
  // false; readers set it from the file, so a reader's meta() copied into a writer keeps
  // the file's kind.
  bool with_embeddings = true;
};

// A block of consecutive rows. `embeddings` is n×dim float32 CPU contiguous, or undefined
// for metadata-only files; the vectors all have n entries.
struct Rows {
  at::Tensor embeddings;
  std::vector<int64_t> ids;
  std::vector<std::string> paths;
  std::vector<int32_t> labels;
  int64_t size() const { return int64_t(ids.size()); }
  // Concatenates (embeddings too, when both defined; an empty side takes the other's kind).
  // Throws invp::Error when non-empty sides disagree on having embeddings.
  void append(const Rows& other);
};

// Streams rows into OUT with bounded memory and survives being killed: rows are buffered
// and written in chunks of `chunk_rows` as files under the directory "OUT.partial/" (each
// chunk file written atomically, plus a manifest of meta + chunk size). Constructing a
// writer over an existing OUT.partial whose manifest matches (dim, model_hash, source,
// precision, shard, chunk_rows, with_embeddings) resumes: resume_rows() says how many rows are already stored
// and the caller continues from there (categories and model_path are taken from the new
// meta; `created` from the manifest unless given). A mismatching manifest is discarded with
// a warning. finish() assembles OUT (HDF5, streamed chunk by chunk) under a temp name,
// renames it into place and removes OUT.partial; until then an existing OUT is untouched.
// Rows still buffered when the writer is destroyed without finish() are lost (redone on
// resume). Chunk files are checked (size, header, XXH3 checksum) on resume and again in
// finish(); a damaged one is dropped with everything after it. One writer per OUT at a
// time (callers lock). Embeddings may be any float dtype/device; they are stored float32.
class EmbeddingWriter {
 public:
  EmbeddingWriter(std::string out, StoreMeta meta, int64_t chunk_rows = 4096);
  ~EmbeddingWriter();
  int64_t resume_rows() const;  // rows already stored when the writer was made
  // Largest id held so far (stored or buffered) + 1; 0 when none. After a resume this is
  // the source item to continue from even when some items were skipped.
  int64_t next_id() const;
  void append(const Rows& rows);  // any number of rows; they must follow on from what is held
  // Writes OUT; the writer is then spent (append/finish throw).
  void finish();
  EmbeddingWriter(const EmbeddingWriter&) = delete;
  EmbeddingWriter& operator=(const EmbeddingWriter&) = delete;

 private:
  struct Impl;
  Impl* impl_;
};

// Random access in blocks (memory proportional to the block, not N).
class EmbeddingReader {
 public:
  explicit EmbeddingReader(const std::string& path);  // embeddings.h5 or meta.h5
  ~EmbeddingReader();
  int64_t size() const;
  int64_t dim() const;
  bool has_embeddings() const;
  const StoreMeta& meta() const;
  // Rows [start, start+count); embeddings only when has_embeddings() and with_embeddings.
  // Out-of-range rows and damaged data throw invp::Error naming the file.
  Rows read(int64_t start, int64_t count, bool with_embeddings = true) const;
  Rows read_all(bool with_embeddings = true) const { return read(0, size(), with_embeddings); }
  // Embeddings of the given rows (ascending, each < size()) as rows.size()×dim, read run by
  // run of consecutive rows: for re-ranking a few hundred candidates without loading the file.
  at::Tensor read_embeddings(const std::vector<int64_t>& rows) const;
  EmbeddingReader(const EmbeddingReader&) = delete;
  EmbeddingReader& operator=(const EmbeddingReader&) = delete;

 private:
  struct Impl;
  Impl* impl_;
};

// The parts of one source (files from `invp embed --shard`, given in any order) joined into
// OUT, rows in id order, streamed with bounded memory. Refuses, naming the files, parts made
// by different models or in different precisions or dimensions, parts with and without
// embeddings, and overlapping ids. Returns OUT's meta (shard cleared).
StoreMeta join_parts(const std::vector<std::string>& parts, const std::string& out);

// Writes a whole file in one go, atomically (metadata-only when rows.embeddings is undefined
// or meta.with_embeddings is false; meta.dim 0 is taken from the embeddings).
void write_store(const std::string& path, const StoreMeta& meta, const Rows& rows);

}  // namespace invp::store
