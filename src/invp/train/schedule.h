// Per-epoch schedules: the invariance-loss ramp ω(epoch) and the learning rate.
// Epochs are 1-based (e = 1..E). No tensors.
#pragma once
#include <string>
#include <vector>

namespace invp::train {

// Binary: 0 for epoch <= T, 1 after. Gaussian: exp(-5 (1 - e/T)^2) for e <= T, 1 after.
// T <= 0 means "no ramp": 1 from the first epoch.
double ramp_weight(int epoch, int T, bool gaussian);

// The cosine curve's versions (TrainConfig::lr_curve). Version 1, invp before the reference's
// curve was adopted: 0.5 * base * (1 + cos(pi * e / E)), whose last epoch runs at rate 0.
// Version 2, the reference's (main.py's adjust_learning_rate at its 0-based epoch e - 1):
// 0.5 * base * (1 + cos(pi * (e - 1) / E)): the first epoch trains at base, the last above 0.
constexpr int kLrCurveFirst = 1, kLrCurveReference = 2;

// "cosine": as above, by `curve`.
// "step":   base * gamma^k, k = number of milestones m with e >= m (the reference's rule; its
//           first trained epoch is numbered 1, as here, so milestone 400 decays the 400th epoch).
// Any other kind throws invp::Error.
double learning_rate(double base, int epoch, int epochs, const std::string& kind,
                     std::vector<int> milestones = {}, double gamma = 0.1,
                     int curve = kLrCurveReference);

}  // namespace invp::train
