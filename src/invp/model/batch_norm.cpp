#include <invp/model/batch_norm.h>

#include <torch/autograd.h>
#include <torch/nn/functional/batchnorm.h>
#include <torch/torch.h>

#include <utility>
#include <vector>

namespace invp::model {
namespace {
AllreduceSum g_sum;

// Every dimension but the channels'.
std::vector<int64_t> reduce_dims(const torch::Tensor& x) {
  std::vector<int64_t> d;
  for (int64_t i = 0; i < x.dim(); ++i)
    if (i != 1) d.push_back(i);
  return d;
}

// Broadcast shape of a per-channel vector against x: 1×C×1×…
torch::Tensor per_channel(const torch::Tensor& v, const torch::Tensor& x) {
  std::vector<int64_t> shape(size_t(x.dim()), 1);
  shape[1] = v.size(0);
  return v.view(shape);
}

struct SyncBn : torch::autograd::Function<SyncBn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, torch::Tensor running_mean,
                               torch::Tensor running_var, double momentum, double eps) {
    auto x = input.to(torch::kFloat);
    const auto dims = reduce_dims(x);
    const int64_t c = x.size(1);
    // One allreduce: per-channel sums of x and x², and the element count.
    // Sums accumulated in float64: the ranks' partial sums then add up to the whole batch's.
    auto packed = torch::cat({x.sum(dims, false, torch::kDouble), x.square().sum(dims, false, torch::kDouble),
                              torch::full({1}, double(x.numel() / c), torch::kDouble)});
    g_sum(packed);
    const double n = packed[2 * c].item<double>();
    auto mean = packed.slice(0, 0, c) / n;
    auto var = (packed.slice(0, c, 2 * c) / n - mean.square()).clamp_min(0);
    {
      torch::NoGradGuard ng;
      running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype()), momentum);
      running_var.mul_(1 - momentum).add_((var * (n / std::max(1.0, n - 1))).to(running_var.dtype()), momentum);
    }
    auto invstd = (var + eps).rsqrt().to(torch::kFloat);
    auto xhat = (x - per_channel(mean.to(torch::kFloat), x)) * per_channel(invstd, x);
    ctx->save_for_backward({xhat, invstd, weight});
    ctx->saved_data["n"] = n;
    auto y = xhat * per_channel(weight, x) + per_channel(bias, x);
    return y.to(input.scalar_type());
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    auto xhat = saved[0], invstd = saved[1], weight = saved[2];
    const double n = ctx->saved_data["n"].toDouble();
    auto dy = grads[0].to(torch::kFloat);
    const auto dims = reduce_dims(dy);
    const int64_t c = dy.size(1);
    auto packed = torch::cat({dy.sum(dims, false, torch::kDouble), (dy * xhat).sum(dims, false, torch::kDouble)});
    auto dbias = packed.slice(0, 0, c).to(torch::kFloat), dweight = packed.slice(0, c, 2 * c).to(torch::kFloat);  // this rank's share
    g_sum(packed);
    auto mean_dy = (packed.slice(0, 0, c) / n).to(torch::kFloat);
    auto mean_dy_xhat = (packed.slice(0, c, 2 * c) / n).to(torch::kFloat);
    auto dx = per_channel(weight * invstd, dy) *
              (dy - per_channel(mean_dy, dy) - xhat * per_channel(mean_dy_xhat, dy));
    return {dx.to(grads[0].scalar_type()), dweight, dbias, torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

void set_batch_norm_sync(AllreduceSum sum) { g_sum = std::move(sum); }
bool batch_norm_synced() { return bool(g_sum); }

BatchNormImpl::BatchNormImpl(int64_t features) : features(features) { reset(); }

void BatchNormImpl::reset() {
  weight = register_parameter("weight", torch::ones({features}));
  bias = register_parameter("bias", torch::zeros({features}));
  running_mean = register_buffer("running_mean", torch::zeros({features}));
  running_var = register_buffer("running_var", torch::ones({features}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::tensor(0, torch::kLong));
}

torch::Tensor BatchNormImpl::forward(const torch::Tensor& x) {
  if (is_training()) num_batches_tracked += 1;
  if (g_sum && is_training())
    return SyncBn::apply(x, weight, bias, running_mean, running_var, momentum, eps);
  return torch::nn::functional::detail::batch_norm(x, running_mean, running_var, weight, bias, is_training(),
                                                  momentum, eps);
}

void BatchNormImpl::pretty_print(std::ostream& stream) const {
  stream << "invp::model::BatchNorm(" << features << ")";
}

}  // namespace invp::model
