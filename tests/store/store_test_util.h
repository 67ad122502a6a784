// Helpers shared by the store tests: temp dirs, deterministic rows, whole-file comparison.
#pragma once
#include <invp/store/embedding_store.h>

#include <gtest/gtest.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <filesystem>
#include <string>

namespace invp::store::test {

namespace fs = std::filesystem;

inline fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("invp_store_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Rows [first, first + n) of a deterministic collection: unicode paths with spaces, some
// unknown labels (−1), unit-norm embeddings that depend only on the row number.
inline Rows make_rows(int64_t first, int64_t n, int64_t dim) {
  Rows r;
  r.embeddings = at::empty({n, dim}, at::kFloat);
  auto* e = r.embeddings.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = first + i;
    for (int64_t j = 0; j < dim; ++j) e[i * dim + j] = float((id * 31 + j * 7) % 97) / 97.0f - 0.5f;
    r.ids.push_back(id);
    r.labels.push_back(id % 5 == 4 ? -1 : int32_t(id % 5));
    r.paths.push_back("dir with space/bild ä ü 猫 " + std::to_string(id) + ".png");
  }
  r.embeddings = (r.embeddings / r.embeddings.norm(2, 1, true)).contiguous();
  return r;
}

inline StoreMeta make_meta(int64_t dim, const std::string& hash = "0123456789abcdef") {
  StoreMeta m;
  m.dim = dim;
  m.model_hash = hash;
  m.model_path = "/models/model.pt";
  m.source = "/data/images été/";
  m.categories = {"T-shirt/top", "Trouser", "Pullöver", "Dress", ""};
  return m;
}

// Equal contents (not bytes: `created` may differ).
inline void expect_same_file(const std::string& a, const std::string& b) {
  EmbeddingReader ra(a), rb(b);
  ASSERT_EQ(ra.size(), rb.size());
  EXPECT_EQ(ra.dim(), rb.dim());
  EXPECT_EQ(ra.has_embeddings(), rb.has_embeddings());
  EXPECT_EQ(ra.meta().model_hash, rb.meta().model_hash);
  EXPECT_EQ(ra.meta().model_path, rb.meta().model_path);
  EXPECT_EQ(ra.meta().source, rb.meta().source);
  EXPECT_EQ(ra.meta().categories, rb.meta().categories);
  auto x = ra.read_all(), y = rb.read_all();
  EXPECT_EQ(x.ids, y.ids);
  EXPECT_EQ(x.labels, y.labels);
  EXPECT_EQ(x.paths, y.paths);
  ASSERT_EQ(x.embeddings.defined(), y.embeddings.defined());
  if (x.embeddings.defined()) {
    EXPECT_TRUE(at::equal(x.embeddings, y.embeddings));
  }
}

}  // namespace invp::store::test
