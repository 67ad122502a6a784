#include "invp/train/invariance_loss.h"

#include "invp/core/error.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <string>

namespace invp::train {

namespace {

constexpr double kEps = 1e-7;

void check(bool ok, const std::string& what) {
  if (!ok) throw invp::Error("", "invariance_loss: " + what);
}

}  // namespace

// CPU: per row, nth_element on a copy of the values finds the M-th largest value t, then one
// scan takes every entry > t and fills up with entries == t (so ties give the same SUM as
// topk). About 3x faster than torch::topk for M = 4096 of N = 60000. Other devices: topk.
torch::Tensor top_m_indices(const torch::Tensor& logits, int64_t m) {
  check(logits.dim() == 2, "top_m_indices: logits must be [B, N]");
  const int64_t B = logits.size(0), N = logits.size(1);
  check(m > 0 && m <= N, "top_m_indices: need 0 < m <= N");
  torch::NoGradGuard ng;
  auto l = logits.detach();
  if (m == N) return torch::arange(N, l.options().dtype(torch::kLong)).expand({B, N}).contiguous();
  if (!l.device().is_cpu() || !at::isFloatingType(l.scalar_type()) || B == 0) {
    return std::get<1>(torch::topk(l, m, 1, /*largest=*/true, /*sorted=*/false));
  }
  l = l.contiguous();
  auto out = torch::empty({B, m}, torch::kLong);
  bool short_row = false;  // only with NaN logits: comparisons then break the selection
  AT_DISPATCH_FLOATING_TYPES(l.scalar_type(), "top_m_indices", [&] {
    const scalar_t* p = l.data_ptr<scalar_t>();
    int64_t* o = out.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> buf(static_cast<size_t>(N));
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* row = p + b * N;
        std::copy(row, row + N, buf.begin());
        std::nth_element(buf.begin(), buf.begin() + (m - 1), buf.end(), std::greater<scalar_t>());
        const scalar_t th = buf[static_cast<size_t>(m - 1)];
        int64_t* orow = o + b * m;
        int64_t k = 0;
        for (int64_t j = 0; j < N && k < m; ++j)
          if (row[j] > th) orow[k++] = j;
        for (int64_t j = 0; j < N && k < m; ++j)
          if (row[j] == th) orow[k++] = j;
        if (k < m) short_row = true;
      }
    });
  });
  if (short_row) return std::get<1>(torch::topk(l, m, 1, /*largest=*/true, /*sorted=*/false));
  return out;
}

// Numerics: every quantity inside a log is a ratio of sums of exponentials, so each row's
// logits are shifted by a constant c_i (the row maximum, detached) before exp. The ratio is
// unchanged by the shift, so the 1e-7 is still added to the exact same ratio as in the
// reference code (−log(ratio + 1e-7)); only overflow/underflow behaviour improves.
// Since c_i is the largest logit of row i, every shifted exp lies in (0, 1].
LossResult invariance_loss(const torch::Tensor& z, const torch::Tensor& bank,
                           const torch::Tensor& anchors, const torch::Tensor& propagated,
                           double invariance_weight, const LossConfig& cfg) {
  check(z.dim() == 2, "z must be [B, D]");
  check(bank.dim() == 2 && bank.size(1) == z.size(1), "bank must be [N, D] with z's D");
  check(anchors.dim() == 1 && anchors.size(0) == z.size(0), "anchors must be [B]");
  check(cfg.tau > 0.0f, "tau must be > 0");
  check(cfg.background > 0, "background (M) must be > 0");
  const int64_t B = z.size(0);
  const int64_t N = bank.size(0);
  const int64_t M = std::min<int64_t>(cfg.background, N);
  const auto dev = z.device();

  // Logits with the bank as a constant: B × N.
  auto V = bank.detach().to(dev, z.scalar_type());
  auto logits = torch::matmul(z, V.t()) / static_cast<double>(cfg.tau);

  // Everything differentiable avoids gather/scatter over B × N (their CPU backward is slow):
  // the background sum is a masked sum of exp over the whole row, anchor and propagated
  // logits are recomputed from their bank rows (B × D and B × L × D work).
  torch::Tensor bg_mask, shift;  // bg_mask: B × N, 1 on B_M(i)
  {
    torch::NoGradGuard ng;
    // Partial selection of the M largest logits per row; order inside B_M is irrelevant.
    auto top_idx = top_m_indices(logits, M);
    bg_mask = torch::zeros_like(logits).scatter_(1, top_idx, 1.0);
    shift = logits.detach().amax(1, /*keepdim=*/true);  // row max (always a member of B_M)
  }
  auto row_exp = (logits - shift).exp();                 // B × N, in (0, 1]
  auto bg_sum = (row_exp * bg_mask).sum(1);              // B
  const double inv_tau = 1.0 / static_cast<double>(cfg.tau);
  auto a = anchors.to(dev, torch::kLong);
  auto anchor_logit = (z * V.index_select(0, a)).sum(1) * inv_tau;     // B
  auto anchor_exp = (anchor_logit - shift.squeeze(1)).exp();            // B

  auto instance = (-torch::log(anchor_exp / bg_sum + kEps)).mean();
  auto invariance = torch::zeros({}, logits.options());

  if (cfg.use_invariance) {
    check(propagated.defined(), "propagated sets are required when use_invariance is on");
    check(propagated.dim() == 2 && propagated.size(0) == B, "propagated must be [B, L]");
    check(cfg.hard_positives > 0, "hard_positives (P) must be > 0");
    const int64_t L = propagated.size(1);
    if (L > 0) {
      auto prop = propagated.to(dev, torch::kLong);
      auto valid = prop.ge(0);                                      // B × L
      check(prop.lt(N).all().item<bool>(), "propagated index out of range");
      auto prop_c = prop.clamp_min(0);
      const int64_t D = z.size(1);
      auto prop_rows = V.index_select(0, prop_c.reshape({-1})).view({B, L, D});
      auto prop_shifted = torch::bmm(prop_rows, z.unsqueeze(2)).squeeze(2) * inv_tau - shift;  // B × L
      torch::Tensor hard_idx;
      {
        torch::NoGradGuard ng;
        // Invalid entries are +inf so that the smallest P pick all valid ones first; the
        // cap P <= |N(i)| is then simply "keep the picked entries that are valid".
        auto key = prop_shifted.detach().masked_fill(valid.logical_not(),
                                                     std::numeric_limits<double>::infinity());
        const int64_t P = std::min<int64_t>(cfg.hard_positives, L);
        hard_idx = std::get<1>(torch::topk(key, P, 1, /*largest=*/false, /*sorted=*/false));
      }
      auto hard_valid = valid.gather(1, hard_idx).to(logits.scalar_type());   // B × P
      auto hard_sum = (prop_shifted.gather(1, hard_idx).exp() * hard_valid).sum(1);  // B

      torch::Tensor denom;
      if (cfg.denominator == Denominator::Reference) {
        denom = bg_sum - anchor_exp;
      } else {
        torch::Tensor bg_keep;
        {
          torch::NoGradGuard ng;
          // Membership of each bank id in N(i): B × (N+1), invalid entries parked in column N.
          auto in_n = torch::zeros({B, N + 1}, torch::TensorOptions().dtype(torch::kBool).device(dev));
          auto cols = prop.masked_fill(valid.logical_not(), N);
          in_n.scatter_(1, cols, true);
          bg_keep = bg_mask * in_n.narrow(1, 0, N).logical_not().to(bg_mask.scalar_type());
        }
        denom = (row_exp * bg_keep).sum(1) + hard_sum;
      }
      auto has_n = valid.any(1);                                    // B
      // Empty rows get a harmless denominator so that no NaN leaks into where()'s gradient.
      denom = torch::where(has_n, denom, torch::ones_like(denom));
      auto row = -torch::log(hard_sum / denom + kEps);
      invariance = torch::where(has_n, row, torch::zeros_like(row)).sum() / static_cast<double>(B);
    }
  }

  LossResult r;
  r.instance = instance;
  r.invariance = invariance;
  r.total = cfg.use_invariance ? instance + invariance_weight * invariance : instance;
  return r;
}

}  // namespace invp::train
