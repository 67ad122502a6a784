#include <invp/core/error.h>
#include <invp/index/exact_knn.h>

#include <ATen/ATen.h>
#include <faiss/Index.h>
#include <faiss/utils/distances.h>

#include <algorithm>
#include <string>
#include <vector>

namespace invp::index {
namespace {

void check_matrix(const at::Tensor& t, const char* what) {
  const std::string w = what;
  if (!t.defined()) throw Error("", "exact kNN: " + w + " tensor is undefined");
  if (t.dim() != 2)
    throw Error("", "exact kNN: " + w + " must be 2-D (rows×dim), got " +
                        std::to_string(t.dim()) + "-D");
  if (t.scalar_type() != at::kFloat)
    throw Error("", "exact kNN: " + w + " must be float32", "convert with .to(at::kFloat)");
  if (!t.device().is_cpu()) throw Error("", "exact kNN: " + w + " must be on the CPU");
  if (!t.is_contiguous()) throw Error("", "exact kNN: " + w + " must be contiguous",
                                      "call .contiguous() first");
}

}  // namespace

KnnResult knn_inner_product(const at::Tensor& queries, const at::Tensor& base, int k,
                            bool exclude_self, int64_t tile_rows, int64_t self_offset) {
  check_matrix(queries, "queries");
  check_matrix(base, "base");
  const int64_t q = queries.size(0), n = base.size(0), d = base.size(1);
  if (queries.size(1) != d)
    throw Error("", "exact kNN: queries have dim " + std::to_string(queries.size(1)) +
                        " but base has dim " + std::to_string(d));
  if (d <= 0) throw Error("", "exact kNN: feature dimension must be positive");
  const int64_t max_k = exclude_self ? n - 1 : n;
  if (k < 1 || k > max_k)
    throw Error("", "exact kNN: k=" + std::to_string(k) + " outside [1, " +
                        std::to_string(max_k) + "] for a base of " + std::to_string(n) +
                        " rows" + (exclude_self ? " (self excluded)" : ""));
  if (exclude_self && (self_offset < 0 || q + self_offset > n))
    throw Error("", "exact kNN: exclude_self needs the queries to be base rows " + std::to_string(self_offset) +
                        "..+Q-1, but Q=" + std::to_string(q) + " and N=" + std::to_string(n));
  if (tile_rows < 1) throw Error("", "exact kNN: tile_rows must be positive");

  auto indices = at::empty({q, k}, at::kLong);
  auto sims = at::empty({q, k}, at::kFloat);
  // One extra column when the query itself may come back among the results.
  const int64_t ks = exclude_self ? k + 1 : k;
  const int64_t tile = std::min<int64_t>(tile_rows, std::max<int64_t>(q, 1));
  std::vector<float> tile_sim(exclude_self ? tile * ks : 0);
  std::vector<int64_t> tile_idx(exclude_self ? tile * ks : 0);

  const float* qp = queries.data_ptr<float>();
  const float* bp = base.data_ptr<float>();
  int64_t* out_i = indices.data_ptr<int64_t>();
  float* out_s = sims.data_ptr<float>();
  static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "FAISS ids must be int64");

  for (int64_t r0 = 0; r0 < q; r0 += tile) {
    const int64_t rows = std::min(tile, q - r0);
    if (!exclude_self) {
      // Results are already in their final layout: write straight into the outputs.
      faiss::knn_inner_product(qp + r0 * d, bp, size_t(d), size_t(rows), size_t(n), size_t(k),
                               out_s + r0 * k, out_i + r0 * k);
      continue;
    }
    faiss::knn_inner_product(qp + r0 * d, bp, size_t(d), size_t(rows), size_t(n), size_t(ks),
                             tile_sim.data(), tile_idx.data());
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t self = self_offset + r0 + r;
      const int64_t* si = tile_idx.data() + r * ks;
      const float* ss = tile_sim.data() + r * ks;
      int64_t* di = out_i + (r0 + r) * k;
      float* ds = out_s + (r0 + r) * k;
      int64_t w = 0;
      for (int64_t c = 0; c < ks && w < k; ++c) {
        if (si[c] == self) continue;  // drop the query's own row (at most once)
        di[w] = si[c];
        ds[w] = ss[c];
        ++w;
      }
      // Self absent (ties): the loop above stopped after k entries, i.e. dropped the last.
    }
  }
  return {indices, sims};
}

}  // namespace invp::index
