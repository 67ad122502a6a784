// Per-epoch schedules: the invariance-loss ramp ω(epoch) and the learning rate.
// Epochs are 1-based (e = 1..E). No tensors.
#pragma once
#include <string>
#include <vector>

namespace invp::train {

// Binary: 0 for epoch <= T, 1 after. Gaussian: exp(-5 (1 - e/T)^2) for e <= T, 1 after.
// T <= 0 means "no ramp": 1 from the first epoch.
double ramp_weight(int epoch, int T, bool gaussian);

// "cosine": 0.5 * base * (1 + cos(pi * e / E)).
// "step":   base * gamma^k, k = number of milestones m with e >= m.
// Any other kind throws invp::Error.
double learning_rate(double base, int epoch, int epochs, const std::string& kind,
                     std::vector<int> milestones = {}, double gamma = 0.1);

}  // namespace invp::train
