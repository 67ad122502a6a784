#include <invp/train/schedule.h>

#include <invp/core/error.h>

#include <cmath>

namespace invp::train {

double ramp_weight(int epoch, int T, bool gaussian) {
  if (T <= 0 || epoch > T) return 1.0;
  if (!gaussian) return 0.0;
  const double r = 1.0 - static_cast<double>(epoch) / static_cast<double>(T);
  return std::exp(-5.0 * r * r);
}

double learning_rate(double base, int epoch, int epochs, const std::string& kind,
                     std::vector<int> milestones, double gamma, int curve) {
  if (kind == "cosine") {
    if (epochs <= 0) throw invp::Error("", "cosine schedule needs epochs > 0", "set --epochs");
    const double pi = std::acos(-1.0);
    const int e = curve == kLrCurveFirst ? epoch : epoch - 1;
    return 0.5 * base * (1.0 + std::cos(pi * static_cast<double>(e) / epochs));
  }
  if (kind == "step") {
    double lr = base;
    for (int m : milestones)
      if (epoch >= m) lr *= gamma;
    return lr;
  }
  throw invp::Error("", "unknown learning-rate schedule '" + kind + "'",
                    "use 'cosine' or 'step'");
}

}  // namespace invp::train
