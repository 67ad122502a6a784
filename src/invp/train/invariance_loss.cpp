#include <invp/train/invariance_loss.h>

#include <invp/core/error.h>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace invp::train {

namespace {

constexpr double kEps = 1e-7;

void check(bool ok, const std::string& what) {
  if (!ok) throw invp::Error("", "invariance_loss: " + what);
}

}  // namespace

// CPU: per row, find the M-th largest value t, then one scan takes every entry > t and
// fills up with entries == t (so ties give the same SUM as topk; indices come out in
// increasing column order). Finding t: a strided sample of the row gives a value t_lo that
// is, with overwhelming probability, below t; one branch-free pass keeps the candidates
// >= t_lo (about 1.4·M of them) and nth_element on those gives t. When the sample was
// unlucky (fewer than M candidates) the row falls back to nth_element on a copy of the whole
// row, which is always exact. Rows with NaN use torch::topk. Faster than torch::topk on the
// CPU (BENCHMARKS.md, "Loss step after the rewrite"). Other devices: topk.
namespace {

template <typename scalar_t>
bool top_m_row(const scalar_t* row, int64_t N, int64_t m, int64_t* orow,
               std::vector<scalar_t>& buf, std::vector<scalar_t>& cval,
               std::vector<int64_t>& cidx) {
  constexpr int64_t kSample = 2048;
  scalar_t th;
  int64_t nc = -1;  // number of candidates (>= t_lo), -1: whole row
  if (N >= 8 * kSample && m * 4 <= N) {
    const int64_t stride = N / kSample;
    buf.resize(static_cast<size_t>(kSample));
    for (int64_t s = 0; s < kSample; ++s) buf[s] = row[s * stride];
    const double p = static_cast<double>(m) / static_cast<double>(N);
    const double mean = p * kSample, sd = std::sqrt(kSample * p * (1.0 - p));
    const int64_t k_lo = static_cast<int64_t>(std::ceil(mean + 5.0 * sd + 8.0));
    if (k_lo < kSample) {
      std::nth_element(buf.begin(), buf.begin() + (k_lo - 1), buf.begin() + kSample,
                       std::greater<scalar_t>());
      const scalar_t lo = buf[static_cast<size_t>(k_lo - 1)];
      cval.resize(static_cast<size_t>(N));
      cidx.resize(static_cast<size_t>(N));
      int64_t c = 0;
      bool nan = false;
      for (int64_t j = 0; j < N; ++j) {  // branch-free compaction
        const scalar_t v = row[j];
        nan |= v != v;
        cval[c] = v;
        cidx[c] = j;
        c += v >= lo;
      }
      if (nan) return false;
      if (c >= m) nc = c;
    }
  }
  if (nc >= 0) {
    buf.assign(cval.begin(), cval.begin() + nc);
    std::nth_element(buf.begin(), buf.begin() + (m - 1), buf.end(), std::greater<scalar_t>());
    th = buf[static_cast<size_t>(m - 1)];
    int64_t k = 0;
    for (int64_t c = 0; c < nc && k < m; ++c)
      if (cval[c] > th) orow[k++] = cidx[c];
    for (int64_t c = 0; c < nc && k < m; ++c)
      if (cval[c] == th) orow[k++] = cidx[c];
    return k == m;
  }
  buf.assign(row, row + N);
  std::nth_element(buf.begin(), buf.begin() + (m - 1), buf.end(), std::greater<scalar_t>());
  th = buf[static_cast<size_t>(m - 1)];
  int64_t k = 0;
  for (int64_t j = 0; j < N && k < m; ++j)
    if (row[j] > th) orow[k++] = j;
  for (int64_t j = 0; j < N && k < m; ++j)
    if (row[j] == th) orow[k++] = j;
  return k == m;  // short only with NaN logits: comparisons then break the selection
}

}  // namespace

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
  std::atomic<bool> short_row{false};
  AT_DISPATCH_FLOATING_TYPES(l.scalar_type(), "top_m_indices", [&] {
    const scalar_t* p = l.data_ptr<scalar_t>();
    int64_t* o = out.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> buf, cval;
      std::vector<int64_t> cidx;
      for (int64_t b = b0; b < b1; ++b)
        if (!top_m_row(p + b * N, N, m, o + b * m, buf, cval, cidx)) short_row = true;
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
//
// Cost: the B × N logits z·Vᵀ/τ are computed without autograd, the top-M selection runs on
// them, and everything after it only touches the selected entries: B_M(i) (M per row), the
// anchor and N(i) (L per row). The gradient wrt z is written by hand (InvpLossFunction):
// every loss is a function of the selected logits s_ij = z_i·v_j/τ only, so
// dL/dz_i = (1/τ) Σ_j (dL/ds_ij) v_j over the selected entries, O(B·(M+L)·D) work. The
// coefficients dL/ds_ij are computed in the forward pass (per loss, per row) and only scaled
// by the incoming gradients in backward. Entries are kept as separate terms (the anchor
// apart from B_M(i), each propagated entry apart), so an id that is selected several times
// (the anchor inside B_M, duplicates of the concat mode) gets the sum of its terms.
namespace {

// Per-row coefficients saved by the forward pass for the backward pass.
struct Saved {
  torch::Tensor bank;      // N × D, z's dtype, contiguous
  torch::Tensor top_idx;   // B × M int64: B_M(i)
  torch::Tensor bg_ins;    // B × M: dL_ins(i)/ds_ij for j in B_M(i)
  torch::Tensor bg_inv;    // B × M: dL_inv(i)/ds_ij for j in B_M(i) (undefined without L_inv)
  torch::Tensor anchors;   // B int64
  torch::Tensor anc_ins;   // B: dL_ins(i)/ds_{i,a_i} (anchor term)
  torch::Tensor anc_inv;   // B (undefined without L_inv)
  torch::Tensor hard_idx;  // B × P int64 bank ids, −1 = unused slot (undefined without L_inv)
  torch::Tensor hard_inv;  // B × P: dL_inv(i)/ds_ih
};

template <typename scalar_t>
void forward_rows(const Saved& s, const torch::Tensor& logits, const torch::Tensor& propagated,
                  int64_t P, Denominator den_kind, bool easiest, torch::Tensor& ins_rows,
                  torch::Tensor& inv_rows) {
  const bool paper = den_kind == Denominator::Paper, plain = den_kind == Denominator::Plain;
  using acc_t = double;
  const int64_t B = logits.size(0), N = logits.size(1), M = s.top_idx.size(1);
  const bool inv = propagated.defined();
  const int64_t L = inv ? propagated.size(1) : 0;
  const scalar_t* lg = logits.data_ptr<scalar_t>();
  const int64_t* top = s.top_idx.data_ptr<int64_t>();
  const int64_t* anc = s.anchors.data_ptr<int64_t>();
  const int64_t* prop = inv ? propagated.data_ptr<int64_t>() : nullptr;
  scalar_t* bg_ins = s.bg_ins.data_ptr<scalar_t>();
  scalar_t* anc_ins = s.anc_ins.data_ptr<scalar_t>();
  scalar_t* bg_inv = inv ? s.bg_inv.data_ptr<scalar_t>() : nullptr;
  scalar_t* anc_inv = inv ? s.anc_inv.data_ptr<scalar_t>() : nullptr;
  int64_t* hard_idx = inv ? s.hard_idx.data_ptr<int64_t>() : nullptr;
  scalar_t* hard_inv = inv ? s.hard_inv.data_ptr<scalar_t>() : nullptr;
  double* ins_out = ins_rows.data_ptr<double>();
  double* inv_out = inv ? inv_rows.data_ptr<double>() : nullptr;

  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<acc_t> e(static_cast<size_t>(M));
    std::vector<std::pair<acc_t, int64_t>> members;  // (logit, bank id) of valid N(i) entries
    std::vector<int64_t> stamp;                      // Paper: stamp[id] == i ⇔ id ∈ N(i)
    if (inv && paper) stamp.assign(static_cast<size_t>(N), -1);
    for (int64_t i = b0; i < b1; ++i) {
      const scalar_t* row = lg + i * N;
      const int64_t* ti = top + i * M;
      // Shift: the row maximum, which is always a member of B_M(i).
      acc_t c = -std::numeric_limits<acc_t>::infinity();
      for (int64_t k = 0; k < M; ++k) c = std::max<acc_t>(c, row[ti[k]]);
      acc_t S = 0;
      for (int64_t k = 0; k < M; ++k) S += (e[k] = std::exp(acc_t(row[ti[k]]) - c));
      const acc_t ea = std::exp(acc_t(row[anc[i]]) - c);
      const acc_t r = ea / S;
      ins_out[i] = -std::log(r + kEps);
      // L_ins = −log(r + ε), r = e_a / S: dL/ds_a = −r/(r+ε), dL/ds_j = r/(r+ε)·e_j/S.
      const acc_t w = r / (r + kEps);
      scalar_t* bi = bg_ins + i * M;
      for (int64_t k = 0; k < M; ++k) bi[k] = static_cast<scalar_t>(w * e[k] / S);
      anc_ins[i] = static_cast<scalar_t>(-w);
      if (!inv) continue;

      scalar_t* bv = bg_inv + i * M;
      int64_t* hi = hard_idx + i * P;
      scalar_t* hv = hard_inv + i * P;
      std::fill(bv, bv + M, scalar_t(0));
      std::fill(hi, hi + P, int64_t(-1));
      std::fill(hv, hv + P, scalar_t(0));
      anc_inv[i] = 0;
      inv_out[i] = 0;
      members.clear();
      const int64_t* pi = prop + i * L;
      for (int64_t k = 0; k < L; ++k)
        if (pi[k] >= 0) members.emplace_back(acc_t(row[pi[k]]), pi[k]);
      if (members.empty()) continue;  // contributes 0 (but counts in the batch mean)
      // H(i): the P entries with the smallest logit (entries, not ids), P capped at |N(i)|;
      // with `easiest`, the P with the largest (the reference's not_hardpos).
      const int64_t p = std::min<int64_t>(P, static_cast<int64_t>(members.size()));
      auto by_logit = [easiest](const std::pair<acc_t, int64_t>& x, const std::pair<acc_t, int64_t>& y) {
        return easiest ? x.first > y.first : x.first < y.first;
      };
      if (p < static_cast<int64_t>(members.size()))
        std::nth_element(members.begin(), members.begin() + (p - 1), members.end(), by_logit);
      acc_t H = 0;
      for (int64_t k = 0; k < p; ++k) H += std::exp(members[k].first - c);
      acc_t den = 0;
      if (plain) {
        den = S;
      } else if (!paper) {
        den = S - ea;
      } else {
        for (int64_t k = 0; k < L; ++k)
          if (pi[k] >= 0) stamp[pi[k]] = i;
        for (int64_t k = 0; k < M; ++k)
          if (stamp[ti[k]] != i) den += e[k];
        den += H;
      }
      const acc_t q = H / den;
      inv_out[i] = -std::log(q + kEps);
      // L_inv = −log(q + ε), q = H / den; g = dL/dq.
      //  hard entry h:   dq/ds_h = e_h/den − (q/den)·∂den/∂s_h
      //  background j:   dq/ds_j = −(q/den)·∂den/∂s_j
      // Reference: den = S − e_a, so ∂den/∂s_j = e_j on B_M, −e_a on the anchor term, 0 on H.
      // Plain: den = S, so ∂den/∂s_j = e_j on B_M and no anchor term.
      // Paper: den = Σ_{B_M \ N(i)} e + H, so ∂den/∂s_j = e_j on the kept part, e_h on H.
      const acc_t g = -1.0 / (q + kEps);
      const acc_t gd = -g * q / den;  // coefficient of ∂den/∂s
      for (int64_t k = 0; k < p; ++k) {
        const acc_t eh = std::exp(members[k].first - c);
        hi[k] = members[k].second;
        hv[k] = static_cast<scalar_t>(g * eh / den + (paper ? gd * eh : acc_t(0)));
      }
      if (!paper) {
        for (int64_t k = 0; k < M; ++k) bv[k] = static_cast<scalar_t>(gd * e[k]);
        anc_inv[i] = plain ? scalar_t(0) : static_cast<scalar_t>(-gd * ea);
      } else {
        for (int64_t k = 0; k < M; ++k)
          if (stamp[ti[k]] != i) bv[k] = static_cast<scalar_t>(gd * e[k]);
      }
    }
  });
}

// grad_z[i] = scale · ( Σ_k (gi·bg_ins[i,k] + gv·bg_inv[i,k]) V[top[i,k]]
//                      + (gi·anc_ins[i] + gv·anc_inv[i]) V[a_i] + Σ_h gv·hard_inv[i,h] V[hard[i,h]] )
// The B·M background terms are regrouped by bank row (a counting sort), so every selected
// bank row is read once and added into the B × D accumulator of the rows that selected it:
// O(B·M·D) flops over ≤ N·D bank reads instead of B·M scattered row reads. Threads take
// disjoint bank-id ranges with their own accumulators, summed at the end.
template <typename scalar_t>
void backward_rows(const Saved& s, double gi, double gv, double scale, torch::Tensor& grad) {
  const int64_t B = s.top_idx.size(0), M = s.top_idx.size(1);
  const int64_t N = s.bank.size(0), D = s.bank.size(1);
  const bool inv = s.bg_inv.defined();
  const int64_t P = inv ? s.hard_idx.size(1) : 0;
  const scalar_t* V = s.bank.data_ptr<scalar_t>();
  const int64_t* top = s.top_idx.data_ptr<int64_t>();
  const int64_t* anc = s.anchors.data_ptr<int64_t>();
  const scalar_t* bg_ins = s.bg_ins.data_ptr<scalar_t>();
  const scalar_t* anc_ins = s.anc_ins.data_ptr<scalar_t>();
  const scalar_t* bg_inv = inv ? s.bg_inv.data_ptr<scalar_t>() : nullptr;
  const scalar_t* anc_inv = inv ? s.anc_inv.data_ptr<scalar_t>() : nullptr;
  const int64_t* hard_idx = inv ? s.hard_idx.data_ptr<int64_t>() : nullptr;
  const scalar_t* hard_inv = inv ? s.hard_inv.data_ptr<scalar_t>() : nullptr;
  const scalar_t sgi = static_cast<scalar_t>(gi), sgv = static_cast<scalar_t>(gv);

  // Counting sort of the background entries by bank id.
  const int64_t E = B * M;
  std::vector<int64_t> first(static_cast<size_t>(N) + 1, 0);
  for (int64_t e = 0; e < E; ++e) ++first[top[e] + 1];
  for (int64_t j = 0; j < N; ++j) first[j + 1] += first[j];
  std::vector<int64_t> cursor(first.begin(), first.end() - 1);
  std::vector<int32_t> row_of(static_cast<size_t>(E));
  std::vector<scalar_t> coef(static_cast<size_t>(E));
  for (int64_t i = 0; i < B; ++i) {
    for (int64_t k = 0; k < M; ++k) {
      const int64_t e = i * M + k;
      const int64_t pos = cursor[top[e]]++;
      row_of[pos] = static_cast<int32_t>(i);
      coef[pos] = inv ? sgi * bg_ins[e] + sgv * bg_inv[e] : sgi * bg_ins[e];
    }
  }

  const int64_t nt = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), N));
  auto acc_all = torch::zeros({nt, B, D}, s.bank.options());
  scalar_t* acc0 = acc_all.data_ptr<scalar_t>();
  at::parallel_for(0, nt, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      // Bank-id range with about E/nt entries.
      auto bound = [&](int64_t u) {
        return static_cast<int64_t>(
            std::lower_bound(first.begin(), first.end(), u * E / nt) - first.begin());
      };
      const int64_t j0 = t == 0 ? 0 : std::min<int64_t>(bound(t), N);
      const int64_t j1 = t == nt - 1 ? N : std::min<int64_t>(bound(t + 1), N);
      scalar_t* acc = acc0 + t * B * D;
      for (int64_t j = j0; j < j1; ++j) {
        const scalar_t* __restrict v = V + j * D;
        for (int64_t e = first[j]; e < first[j + 1]; ++e) {
          scalar_t* __restrict a = acc + static_cast<int64_t>(row_of[e]) * D;
          const scalar_t c = coef[e];
          for (int64_t d = 0; d < D; ++d) a[d] += c * v[d];
        }
      }
    }
  });
  auto acc = nt > 1 ? acc_all.sum(0) : acc_all[0];
  scalar_t* a = acc.data_ptr<scalar_t>();
  auto axpy = [&](int64_t i, scalar_t c, int64_t j) {
    const scalar_t* v = V + j * D;
    scalar_t* o = a + i * D;
    for (int64_t d = 0; d < D; ++d) o[d] += c * v[d];
  };
  for (int64_t i = 0; i < B; ++i) {
    axpy(i, inv ? sgi * anc_ins[i] + sgv * anc_inv[i] : sgi * anc_ins[i], anc[i]);
    for (int64_t h = 0; h < P; ++h)
      if (hard_idx[i * P + h] >= 0) axpy(i, sgv * hard_inv[i * P + h], hard_idx[i * P + h]);
  }
  grad.copy_(acc).mul_(scale);
}

// Outputs {instance, invariance} (0-d; invariance is 0 and has no gradient terms when
// P == 0, i.e. without L_inv or with L == 0). Only z is differentiated.
class InvpLossFunction : public torch::autograd::Function<InvpLossFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const torch::Tensor& z, const torch::Tensor& bank,
                                                const torch::Tensor& anchors,
                                                const torch::Tensor& propagated, int64_t M,
                                                int64_t P, double tau, int64_t den_kind, bool easiest) {
    const int64_t B = z.size(0);
    const bool inv = P > 0;  // propagated is B × 0 without L_inv
    auto zc = z.detach().contiguous();
    const auto opt = zc.options();
    Saved s;
    s.bank = bank;
    s.anchors = anchors;
    // Logits s_ij = z_i·v_j/τ (B × N), no autograd.
    // (addmm with alpha goes through a much slower path than mm here, so z is scaled.)
    auto logits = torch::mm(zc * (1.0 / tau), bank.t());
    s.top_idx = top_m_indices(logits, M).contiguous();
    s.bg_ins = torch::empty({B, M}, opt);
    s.anc_ins = torch::empty({B}, opt);
    if (inv) {
      s.bg_inv = torch::empty({B, M}, opt);
      s.anc_inv = torch::empty({B}, opt);
      s.hard_idx = torch::empty({B, P}, opt.dtype(torch::kLong));
      s.hard_inv = torch::empty({B, P}, opt);
    }
    auto ins_rows = torch::empty({B}, opt.dtype(torch::kDouble));
    torch::Tensor inv_rows;
    if (inv) inv_rows = torch::empty({B}, opt.dtype(torch::kDouble));
    AT_DISPATCH_FLOATING_TYPES(zc.scalar_type(), "invariance_loss_forward", [&] {
      forward_rows<scalar_t>(s, logits, inv ? propagated : torch::Tensor(), P, Denominator(den_kind), easiest, ins_rows,
                             inv_rows);
    });
    logits = torch::Tensor();

    ctx->saved_data["tau"] = tau;
    ctx->saved_data["bank"] = s.bank;
    ctx->saved_data["top_idx"] = s.top_idx;
    ctx->saved_data["bg_ins"] = s.bg_ins;
    ctx->saved_data["anchors"] = s.anchors;
    ctx->saved_data["anc_ins"] = s.anc_ins;
    ctx->saved_data["inv"] = inv;
    if (inv) {
      ctx->saved_data["bg_inv"] = s.bg_inv;
      ctx->saved_data["anc_inv"] = s.anc_inv;
      ctx->saved_data["hard_idx"] = s.hard_idx;
      ctx->saved_data["hard_inv"] = s.hard_inv;
    }
    auto instance = ins_rows.mean().to(zc.scalar_type());
    auto invariance = inv ? inv_rows.mean().to(zc.scalar_type()) : torch::zeros({}, opt);
    return {instance, invariance};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    Saved s;
    s.bank = ctx->saved_data["bank"].toTensor();
    s.top_idx = ctx->saved_data["top_idx"].toTensor();
    s.bg_ins = ctx->saved_data["bg_ins"].toTensor();
    s.anchors = ctx->saved_data["anchors"].toTensor();
    s.anc_ins = ctx->saved_data["anc_ins"].toTensor();
    const bool inv = ctx->saved_data["inv"].toBool();
    if (inv) {
      s.bg_inv = ctx->saved_data["bg_inv"].toTensor();
      s.anc_inv = ctx->saved_data["anc_inv"].toTensor();
      s.hard_idx = ctx->saved_data["hard_idx"].toTensor();
      s.hard_inv = ctx->saved_data["hard_inv"].toTensor();
    }
    const double tau = ctx->saved_data["tau"].toDouble();
    const double gi = grads[0].defined() ? grads[0].item<double>() : 0.0;
    const double gv = inv && grads[1].defined() ? grads[1].item<double>() : 0.0;
    const int64_t B = s.top_idx.size(0);
    auto grad = torch::empty({B, s.bank.size(1)}, s.bank.options());
    // Batch means (1/B) and ds/dz = v/τ.
    const double scale = 1.0 / (static_cast<double>(B) * tau);
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "invariance_loss_backward", [&] {
      backward_rows<scalar_t>(s, gi, gv, scale, grad);
    });
    return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

namespace {
void check_inputs(const torch::Tensor& z, const torch::Tensor& bank, const torch::Tensor& anchors,
                  const LossConfig& cfg) {
  check(z.dim() == 2, "z must be [B, D]");
  check(bank.dim() == 2 && bank.size(1) == z.size(1), "bank must be [N, D] with z's D");
  check(anchors.dim() == 1 && anchors.size(0) == z.size(0), "anchors must be [B]");
  check(cfg.tau > 0.0f, "tau must be > 0");
  check(cfg.background > 0, "background (M) must be > 0");
  check(bank.size(0) > 0, "bank must not be empty");
  if (cfg.use_invariance) check(cfg.hard_positives > 0, "hard_positives (P) must be > 0");
}
}  // namespace

LossResult invariance_loss_tensor_ops(const torch::Tensor& z, const torch::Tensor& bank,
                                      const torch::Tensor& anchors,
                                      const torch::Tensor& propagated, double invariance_weight,
                                      const LossConfig& cfg) {
  check_inputs(z, bank, anchors, cfg);
  const int64_t B = z.size(0), N = bank.size(0);
  const int64_t M = std::min<int64_t>(cfg.background, N);
  const auto dev = z.device();
  auto V = bank.detach().to(dev, z.scalar_type());
  auto a = anchors.to(dev, torch::kLong).unsqueeze(1);
  auto logits = torch::mm(z, V.t()) / static_cast<double>(cfg.tau);  // B × N, differentiable
  auto top = std::get<1>(torch::topk(logits.detach(), M, 1, true, false));
  auto sel = logits.gather(1, top);                                   // B × M
  auto c = std::get<0>(sel.detach().max(1, true));                    // row shift, a constant
  auto e = torch::exp(sel - c);
  auto S = e.sum(1, true);
  auto ea = torch::exp(logits.gather(1, a) - c);
  LossResult r;
  r.instance = (-torch::log(ea / S + kEps)).mean();
  if (cfg.use_invariance) {
    check(propagated.defined(), "propagated sets are required when use_invariance is on");
    check(propagated.dim() == 2 && propagated.size(0) == B, "propagated must be [B, L]");
  }
  if (!cfg.use_invariance || propagated.size(1) == 0) {
    r.invariance = torch::zeros({}, z.options());
    r.total = r.instance;
    return r;
  }
  auto prop = propagated.to(dev, torch::kLong);
  auto valid = prop.ge(0);
  auto pl = logits.gather(1, prop.clamp_min(0));                      // B × L
  // H(i): the P valid entries with the smallest logits (invalid entries sort last).
  const int64_t P = std::min<int64_t>(cfg.hard_positives, prop.size(1));
  auto key = pl.detach().masked_fill(valid.logical_not(), std::numeric_limits<double>::infinity());
  // (--positive-selection easiest: the P largest; invalid entries then sort last as −∞.)
  if (cfg.easiest_positives) key = pl.detach().masked_fill(valid.logical_not(), -std::numeric_limits<double>::infinity());
  auto hard = std::get<1>(torch::topk(key, P, 1, /*largest=*/cfg.easiest_positives, /*sorted=*/false));
  auto hard_ok = valid.gather(1, hard);
  auto eh = torch::exp(pl.gather(1, hard) - c) * hard_ok.to(z.scalar_type());
  auto H = eh.sum(1, true);
  torch::Tensor den;
  if (cfg.denominator == Denominator::Reference) {
    den = S - ea;
  } else if (cfg.denominator == Denominator::Plain) {
    den = S;
  } else {  // Σ over B_M(i) \ N(i), plus H
    // Membership of N(i) as a B × (N+1) mask; padding (−1) goes to the spare last column.
    auto in_n = torch::zeros({B, N + 1}, torch::TensorOptions().dtype(torch::kBool).device(dev));
    in_n.scatter_(1, torch::where(valid, prop, torch::full_like(prop, N)), true);
    auto keep = in_n.gather(1, top).logical_not().to(z.scalar_type());
    den = (e * keep).sum(1, true) + H;
  }
  auto has = valid.any(1, true);
  // Rows with an empty N(i) contribute 0; the where() keeps their gradient exactly 0.
  auto q = torch::where(has, H / torch::where(has, den, torch::ones_like(den)), torch::ones_like(H));
  auto rows = torch::where(has, -torch::log(q + kEps), torch::zeros_like(q));
  r.invariance = rows.mean();
  r.total = r.instance + invariance_weight * r.invariance;
  return r;
}

LossResult invariance_loss(const torch::Tensor& z, const torch::Tensor& bank,
                           const torch::Tensor& anchors, const torch::Tensor& propagated,
                           double invariance_weight, const LossConfig& cfg) {
  if (!z.device().is_cpu())
    return invariance_loss_tensor_ops(z, bank, anchors, propagated, invariance_weight, cfg);
  check_inputs(z, bank, anchors, cfg);
  const int64_t B = z.size(0);
  const int64_t N = bank.size(0);
  const int64_t M = std::min<int64_t>(cfg.background, N);
  const auto dev = z.device();

  // The kernels run on CPU in float or double; other inputs are converted (differentiably).
  torch::Tensor zc = z;
  if (zc.scalar_type() != torch::kFloat && zc.scalar_type() != torch::kDouble)
    zc = zc.to(torch::kFloat);
  auto V = bank.detach().to(torch::kCPU, zc.scalar_type()).contiguous();
  auto a = anchors.to(torch::kCPU, torch::kLong).contiguous();
  if (B > 0) check(a.min().item<int64_t>() >= 0 && a.max().item<int64_t>() < N,
                   "anchor index out of range");

  auto prop = torch::empty({B, 0}, torch::kLong);
  int64_t P = 0;  // 0: no L_inv terms
  if (cfg.use_invariance) {
    check(propagated.defined(), "propagated sets are required when use_invariance is on");
    check(propagated.dim() == 2 && propagated.size(0) == B, "propagated must be [B, L]");
    prop = propagated.to(torch::kCPU, torch::kLong).contiguous();
    check(prop.numel() == 0 || prop.max().item<int64_t>() < N, "propagated index out of range");
    P = std::min<int64_t>(cfg.hard_positives, prop.size(1));  // L = 0: every N(i) is empty
  }

  LossResult r;
  auto outs = InvpLossFunction::apply(zc, V, a, prop, M, P, static_cast<double>(cfg.tau),
                                      int64_t(cfg.denominator), cfg.easiest_positives);
  r.instance = outs[0].to(dev, z.scalar_type());
  if (cfg.use_invariance) {
    r.invariance = outs[1].to(dev, z.scalar_type());
    r.total = r.instance + invariance_weight * r.invariance;
  } else {
    r.invariance = torch::zeros({}, z.options());
    r.total = r.instance;
  }
  return r;
}

}  // namespace invp::train
