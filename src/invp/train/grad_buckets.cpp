#include <invp/core/error.h>
#include <invp/train/grad_buckets.h>

#include <algorithm>

namespace invp::train {

GradientBuckets::GradientBuckets(std::shared_ptr<DistGroup> dist, std::vector<torch::Tensor> params, bool overlap,
                                 int64_t bucket_elements)
    : dist_(std::move(dist)), params_(std::move(params)) {
  if (params_.empty()) throw Error("", "gradient buckets: the model has no parameters");
  int64_t total = 0;
  for (auto& p : params_) total += p.numel();
  if (bucket_elements <= 0) bucket_elements = std::clamp<int64_t>(total / 8, int64_t(64) << 10, int64_t(25) << 18);
  where_.resize(params_.size());
  copied_.assign(params_.size(), 0);
  int64_t filled = 0;
  buckets_.emplace_back();
  for (size_t i = params_.size(); i-- > 0;) {
    if (filled > 0 && filled + params_[i].numel() > bucket_elements) buckets_.emplace_back(), filled = 0;
    auto& b = buckets_.back();
    where_[i] = {buckets_.size() - 1, b.params.size()};
    b.params.push_back(i);
    b.offsets.push_back(filled);
    filled += params_[i].numel();
  }
  for (size_t k = 0; k < buckets_.size(); ++k) {
    auto& b = buckets_[k];
    int64_t n = 0;
    for (size_t i : b.params) n += params_[i].numel();
    if (k + 1 == buckets_.size()) ++n;  // the stop flag
    b.flat = torch::zeros({n}, params_[0].options().requires_grad(false));
  }
  if (!overlap) return;
  for (size_t i = 0; i < params_.size(); ++i)  // a frozen parameter has no gradient to wait for
    if (params_[i].requires_grad())
      hooks_.emplace_back(i, params_[i].register_hook([this, i](const torch::Tensor& g) { arrived(i, g); }));
}

GradientBuckets::~GradientBuckets() {
  for (auto [i, h] : hooks_) params_[i].remove_hook(h);
}

torch::Tensor GradientBuckets::slot(size_t param) {
  auto [k, s] = where_[param];
  const int64_t at = buckets_[k].offsets[s];
  return buckets_[k].flat.slice(0, at, at + params_[param].numel()).view(params_[param].sizes());
}

void GradientBuckets::prepare(bool stop) {
  for (auto& b : buckets_) {
    b.waiting = 0, b.started = false;
    for (size_t i : b.params) b.waiting += hooks_.empty() || params_[i].requires_grad();
  }
  std::fill(copied_.begin(), copied_.end(), 0);
  buckets_.back().flat[-1].fill_(stop ? 1.f : 0.f);
  next_ = 0;
  started_early_ = 0;
  armed_ = !hooks_.empty();
}

void GradientBuckets::start(Bucket& b) {
  b.work = dist_->allreduce_sum_async(b.flat);
  b.started = true;
}

void GradientBuckets::arrived(size_t param, const torch::Tensor& grad) {
  if (!armed_) return;  // a backward outside a training step (none today)
  auto& b = buckets_[where_[param].first];
  if (b.started) throw Error("", "gradient buckets: a gradient arrived after its bucket's allreduce started");
  if (copied_[param]) {
    slot(param).add_(grad);  // autograd sums a leaf's gradients before its hook; kept for safety
    return;
  }
  slot(param).copy_(grad);
  copied_[param] = 1;
  if (--b.waiting > 0) return;
  // In bucket order only: rank r's k-th allreduce must meet every other rank's k-th.
  while (next_ < buckets_.size() && buckets_[next_].waiting == 0) start(buckets_[next_++]), ++started_early_;
}

bool GradientBuckets::finish() {
  armed_ = false;
  for (; next_ < buckets_.size(); ++next_) {
    auto& b = buckets_[next_];
    for (size_t i : b.params) {
      if (copied_[i]) continue;
      auto& g = params_[i].grad();
      if (g.defined() && hooks_.empty()) slot(i).copy_(g);
      else slot(i).zero_();  // with hooks, a gradient that never arrived was never computed
    }
    start(b);
  }
  for (auto& b : buckets_) b.work.wait();
  const double scale = 1.0 / dist_->world();
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    p.mutable_grad().copy_(slot(i).mul_(scale));
  }
  return buckets_.back().flat[-1].item<float>() > 0;
}

}  // namespace invp::train
