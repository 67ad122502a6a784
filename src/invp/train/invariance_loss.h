// Instance-discrimination + invariance-propagation losses (docs/ALGORITHM.md, "The losses,
// exactly").
// Shapes: z B × D (L2-normalised, requires grad); bank N × D (constant, never differentiated);
// anchors B int64 (bank row of each batch item); propagated B × L int64, -1 padded (N(i) per
// row; may be undefined when use_invariance is false). Results are 0-d scalars.
#pragma once
#include <torch/torch.h>

#include <cstdint>

namespace invp::train {

enum class Denominator {
  Reference,  // Σ_{B_M(i)} e_j − e_i  (the released code; default)
  Paper,      // Σ over (B_M(i) \ N(i)) ∪ H(i)  (the paper's formula)
  Plain,      // Σ_{B_M(i)} e_j  (the released code with exclusive=0)
};

struct LossConfig {
  float tau = 0.2f;
  int64_t background = 4096;   // M, capped at N
  int64_t hard_positives = 20; // P, capped at |N(i)| (valid entries of row i)
  Denominator denominator = Denominator::Reference;
  bool use_invariance = true;
  // H(i) from the P most similar entries of N(i) instead of the least (the reference's
  // not_hardpos switch; --positive-selection easiest).
  bool easiest_positives = false;
};

struct LossResult {
  torch::Tensor total;       // instance + invariance_weight * invariance; differentiable wrt z
  torch::Tensor instance;    // mean_i L_ins(i)
  torch::Tensor invariance;  // mean_i L_inv(i) over the whole batch (0 if !use_invariance)
};

// e_j = exp(z_i·v_j / τ); B_M(i) = the M largest e_j;
// L_ins(i) = −log(e_{a_i} / Σ_{B_M} e_j + 1e-7);
// H(i) = the P entries of N(i) with the smallest e (the largest with easiest_positives) (entries, not distinct ids: in the
//        reference "concat" mode a duplicate counts as often as it appears);
// L_inv(i) = −log(Σ_H e / denom + 1e-7).
// denom: Σ_{B_M} e − e_{a_i} (Reference); Σ_{B_M} e (Plain);
// Paper denominator: Σ_{B_M \ N(i)} e + Σ_H e (set difference by bank id; H ⊆ N(i), so the
// union is disjoint; H's entries counted with multiplicity as in the numerator).
// A row with an empty N(i) (all -1) contributes 0 to L_inv but still counts in the batch mean.
// Selections (top-M, hard positives) are not differentiated; gradients flow into z only.
LossResult invariance_loss(const torch::Tensor& z, const torch::Tensor& bank,
                           const torch::Tensor& anchors, const torch::Tensor& propagated,
                           double invariance_weight, const LossConfig& config);

// The same losses written with LibTorch tensor operations and autograd, on any device (the
// CUDA path: `invariance_loss` sends non-CPU inputs here, so z, the bank and the loss stay on
// the GPU). Materialises the B × N logits with autograd, so it is slower than the CPU kernel
// on CPU; the two agree to rounding (tests/train compares them, values and gradients).
LossResult invariance_loss_tensor_ops(const torch::Tensor& z, const torch::Tensor& bank,
                                      const torch::Tensor& anchors,
                                      const torch::Tensor& propagated, double invariance_weight,
                                      const LossConfig& config);

// Indices (B × m int64, unordered) of the m largest entries of each row of logits (B × N),
// 0 < m <= N. Same set as torch::topk(m, sorted=false) up to the choice among tied values;
// faster on CPU (nth_element per row, rows in parallel). Not differentiable.
torch::Tensor top_m_indices(const torch::Tensor& logits, int64_t m);

}  // namespace invp::train
