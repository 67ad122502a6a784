// Rows, write_store and EmbeddingReader (the writer is in embedding_writer.cpp).
#include <invp/core/clock.h>
#include <invp/core/atomic_file.h>
#include <invp/core/error.h>
#include <invp/store/embedding_store.h>
#include <invp/store/h5_io.h>
#include <invp/store/row_buffer.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <memory>

namespace fs = std::filesystem;

namespace invp::store {

void Rows::append(const Rows& other) {
  if (other.size() == 0 && !other.embeddings.defined()) return;
  if (size() == 0 && !embeddings.defined()) {
    *this = other;
    return;
  }
  if (embeddings.defined() != other.embeddings.defined())
    throw Error("", "cannot concatenate rows with and without embeddings");
  if (embeddings.defined()) embeddings = at::cat({embeddings, other.embeddings}, 0);
  ids.insert(ids.end(), other.ids.begin(), other.ids.end());
  paths.insert(paths.end(), other.paths.begin(), other.paths.end());
  labels.insert(labels.end(), other.labels.begin(), other.labels.end());
}

void write_store(const std::string& path, const StoreMeta& meta, const Rows& rows) {
  StoreMeta m = meta;
  m.with_embeddings = meta.with_embeddings && rows.embeddings.defined();
  at::Tensor emb;
  if (m.with_embeddings) {
    if (m.dim == 0 && rows.embeddings.dim() == 2) m.dim = rows.embeddings.size(1);
    if (m.dim < 1 || m.dim > detail::kMaxDim) throw Error(path, "invalid embedding dimension " + std::to_string(m.dim));
    detail::check_rows(rows, m.dim, path);
    emb = rows.embeddings.to(at::kCPU, at::kFloat).contiguous();
  } else {
    detail::check_rows(rows, 0, path);
  }
  if (m.created.empty()) m.created = utc_now_iso();
  detail::RowSpan span;
  span.n = rows.size();
  span.embeddings = emb.defined() ? emb.data_ptr<float>() : nullptr;
  span.ids = rows.ids.data();
  span.labels = rows.labels.data();
  span.paths = rows.paths.data();
  write_atomically(path, [&](const std::string& tmp) {
    detail::StoreFileWriter file(tmp, path, m, span.n);
    file.write(span);
    file.close();
  });
}

}  // namespace invp::store
