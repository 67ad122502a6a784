#include <invp/core/error.h>
#include <invp/index/ann_detail.h>
#include <invp/index/ann_index.h>
#include <invp/index/ivf_knn.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace invp::index {
namespace {

// Rows of `keys` grouped by key value in [0, groups): the rows sorted by key (stably, so by
// row within a group) and each group's start offset (groups + 1 entries).
std::pair<at::Tensor, at::Tensor> group_by(const at::Tensor& keys, int64_t groups) {
  auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  auto counts = at::bincount(keys, {}, groups);
  auto offsets = at::zeros({groups + 1}, at::kLong);
  offsets.slice(0, 1).copy_(at::cumsum(counts, 0));
  return {std::get<1>(sorted), offsets};
}

}  // namespace

KnnResult knn_self_ivf(const at::Tensor& base, int k, const IvfKnnOptions& opt) {
  detail::check_matrix(base, -1, "IVF kNN base");
  const int64_t n = base.size(0);
  if (k < 1 || k > n - 1)
    throw Error("", "IVF kNN: k=" + std::to_string(k) + " outside [1, " + std::to_string(n - 1) +
                        "] for " + std::to_string(n) + " rows (self excluded)");
  if (opt.lists < 0 || opt.probes < 1 || opt.iterations < 1 || opt.train_rows < 0)
    throw Error("", "IVF kNN: lists ≥ 0, probes ≥ 1, iterations ≥ 1 and train_rows ≥ 0 required");
  int64_t lists = opt.lists > 0 ? opt.lists : std::llround(std::sqrt(double(n)));
  lists = std::clamp<int64_t>(lists, 1, std::max<int64_t>(1, n / 8));
  if (opt.probes >= lists) return knn_inner_product(base, base, k, /*exclude_self=*/true);

  c10::NoGradGuard no_grad;
  // Cells: k-means on a sample, then every row's `probes` nearest centroids (the first is the
  // row's home cell).
  auto gen = at::detail::createCPUGenerator(opt.seed);
  const int64_t train = std::min(n, opt.train_rows > 0 ? opt.train_rows : 64 * lists);
  at::Tensor sample = base;
  if (train < n)
    sample = base.index_select(0, at::randperm(n, gen, at::kLong).slice(0, 0, train)).contiguous();
  const at::Tensor centroids = kmeans(sample, int(lists), opt.iterations, opt.seed).centroids;
  auto probe = std::get<1>(at::topk(at::mm(base, centroids.t()), opt.probes, 1)).contiguous();
  const at::Tensor home = probe.select(1, 0).contiguous();
  auto [members, member_off] = group_by(home, lists);
  // Each row's position inside its home cell's member list, to mask the row itself.
  auto slot = at::empty({n}, at::kLong);
  slot.index_put_({members}, at::arange(n, at::kLong) - member_off.index_select(0, home.index_select(0, members)));
  auto [probers, prober_off] = group_by(probe.view({-1}), lists);
  probers = at::div(probers, opt.probes, "floor");  // flat (row, probe) position → row

  const float minus_inf = -std::numeric_limits<float>::infinity();
  auto best_s = at::full({n, k}, minus_inf, at::kFloat);
  auto best_i = at::full({n, k}, -1, at::kLong);
  const int64_t* mo = member_off.data_ptr<int64_t>();
  const int64_t* po = prober_off.data_ptr<int64_t>();
  for (int64_t c = 0; c < lists; ++c) {
    if (mo[c] == mo[c + 1] || po[c] == po[c + 1]) continue;
    const at::Tensor cell = members.slice(0, mo[c], mo[c + 1]);
    const at::Tensor rows = probers.slice(0, po[c], po[c + 1]);
    auto s = at::mm(base.index_select(0, rows), base.index_select(0, cell).t());
    auto own = at::nonzero(home.index_select(0, rows) == c).view({-1});  // rows living in c
    if (own.numel() > 0)
      s.index_put_({own, slot.index_select(0, rows.index_select(0, own))}, minus_inf);
    const int64_t kk = std::min<int64_t>(k, cell.size(0));
    auto top = at::topk(s, kk, 1);
    auto cand_s = at::cat({best_s.index_select(0, rows), std::get<0>(top)}, 1);
    auto cand_i = at::cat({best_i.index_select(0, rows), cell.index_select(0, std::get<1>(top).view({-1})).view({-1, kk})}, 1);
    auto merged = at::topk(cand_s, k, 1);
    best_s.index_copy_(0, rows, std::get<0>(merged));
    best_i.index_copy_(0, rows, at::gather(cand_i, 1, std::get<1>(merged)));
  }
  // Rows whose probed cells held fewer than k others (or only −inf after masking): exact.
  auto short_rows = at::nonzero((best_i < 0).any(1) | at::isinf(best_s).any(1)).view({-1});
  if (short_rows.numel() > 0) {
    auto s = at::mm(base.index_select(0, short_rows), base.t());
    s.index_put_({at::arange(short_rows.size(0), at::kLong), short_rows}, minus_inf);
    auto top = at::topk(s, k, 1);
    best_s.index_copy_(0, short_rows, std::get<0>(top));
    best_i.index_copy_(0, short_rows, std::get<1>(top));
  }
  return {best_i, best_s};
}

}  // namespace invp::index
