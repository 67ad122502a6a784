#include <invp/core/error.h>
#include <invp/core/log.h>
#include <invp/train/graphed_step.h>
#include <invp/train/sgd_step.h>

#include <torch/version.h>

#if defined(INVP_WITH_CUDA) && TORCH_VERSION_MAJOR >= 2
#define INVP_CUDA_GRAPHS 1
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>
#endif

#include <algorithm>
#include <vector>

namespace invp::train {
using model::normalise_rows;
namespace {
double learning_rate(torch::optim::SGD& opt) {
  return static_cast<const torch::optim::SGDOptions&>(opt.param_groups().at(0).options()).lr();
}

torch::Device device_of(model::Encoder& net) { return net->parameters().at(0).device(); }
}  // namespace

bool cuda_graphs_built() {
#ifdef INVP_CUDA_GRAPHS
  return true;
#else
  return false;
#endif
}

#ifdef INVP_CUDA_GRAPHS
struct GraphedStep::Graphs {
  at::cuda::CUDAGraph forward, backward;
  torch::Tensor x, z, grad_z;  // the static input, output and incoming gradient
  double lr = 0;               // the learning rate baked into `backward`
};
#else
struct GraphedStep::Graphs {
  torch::Tensor x;
  double lr = 0;
};
#endif

GraphedStep::GraphedStep(model::Encoder net, torch::optim::SGD& opt, int eager_steps,
                         std::function<void()> before_capture)
    : net_(std::move(net)), opt_(opt), eager_steps_(std::max(1, eager_steps)),
      before_capture_(std::move(before_capture)) {}

GraphedStep::~GraphedStep() = default;

void GraphedStep::invalidate() {
  graphs_.reset();
  replaying_ = false;
}

bool GraphedStep::want_graphs(const torch::Tensor& images) const {
  if (!cuda_graphs_built() || failed_ || steps_ < eager_steps_ || !images.is_floating_point()) return false;
  auto params = net_->parameters();
  if (params.empty() || !params[0].device().is_cuda()) return false;
  for (auto& p : params)  // the captured step updates the optimiser's buffers in place
    if (!momentum_buffer(opt_, p).defined()) return false;
  for (auto& g : opt_.param_groups()) {
    const auto& o = static_cast<const torch::optim::SGDOptions&>(g.options());
    if (o.nesterov() || o.momentum() == 0 || o.lr() != learning_rate(opt_)) return false;
  }
  return true;
}

void GraphedStep::capture(const torch::Tensor& images) {
  invalidate();  // the old pair and its memory pool go first
#ifdef INVP_CUDA_GRAPHS
  const auto dev = device_of(net_);
  if (before_capture_) before_capture_();
  auto g = std::make_unique<Graphs>();
  g->lr = learning_rate(opt_);
  g->x = torch::empty(images.sizes(), images.options().device(dev));
  g->x.copy_(images);
  g->grad_z = torch::zeros({images.size(0), int64_t(net_->config().dim)}, g->x.options());
  auto params = net_->parameters();
  for (auto& p : params) p.mutable_grad() = torch::Tensor();  // the graphs never read .grad()
  // The captures run on a side stream (capture is refused on the default one) into one private
  // memory pool that both graphs share: the backward reads what the forward saved. Nothing runs
  // while capturing, so the step's first replay below is its real computation. "Thread local":
  // the loader's threads keep allocating pinned memory meanwhile, which a global capture forbids.
  torch::cuda::synchronize();
  const auto pool = at::cuda::graph_pool_handle();
  const auto mode = cudaStreamCaptureModeThreadLocal;
  auto side = c10::cuda::getStreamFromPool(false, dev.index());
  try {
    c10::cuda::CUDAStreamGuard on_side(side);
    g->forward.capture_begin(pool, mode);
    auto z = normalise_rows(net_->forward(g->x));
    g->forward.capture_end();
    g->backward.capture_begin(pool, mode);
    auto grads = torch::autograd::grad({z}, params, {g->grad_z}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    const bool stepped = foreach_sgd_step(opt_, grads);  // checked by want_graphs()
    g->backward.capture_end();
    if (!stepped) throw Error("", "the captured SGD step was declined");
    g->z = z.detach();
  } catch (const std::exception& e) {
    // A capture broken by an operation CUDA does not allow meanwhile: end it if it is still
    // open, clear the error and train on eagerly (slower, same arithmetic).
    cudaStreamCaptureStatus status;
    if (cudaStreamIsCapturing(side.stream(), &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
      cudaGraph_t broken = nullptr;
      if (cudaStreamEndCapture(side.stream(), &broken) == cudaSuccess && broken) cudaGraphDestroy(broken);
    }
    (void)cudaGetLastError();
    failed_ = true;
    log::warn(std::string("CUDA graph capture failed, training on without it: ") + e.what());
    return;
  }
  torch::cuda::synchronize();
  graphs_ = std::move(g);
  ++captures_;
#else
  (void)images;
#endif
}

void GraphedStep::recapture() {
  if (!graphs_ || graphs_->lr == learning_rate(opt_) || failed_) return;
  auto x = graphs_->x;  // the last batch: capturing runs nothing, any input of its shape will do
  capture(x);
}

torch::Tensor GraphedStep::forward(const torch::Tensor& images) {
#ifdef INVP_CUDA_GRAPHS
  if (want_graphs(images)) {
    if (!graphs_ || graphs_->lr != learning_rate(opt_) || !graphs_->x.sizes().equals(images.sizes()))
      capture(images);
    else
      graphs_->x.copy_(images, /*non_blocking=*/true);
    if (graphs_) {  // (a failed capture leaves none)
      graphs_->forward.replay();
      replaying_ = true;
      return graphs_->z;
    }
  }
#endif
  replaying_ = false;
  z_eager_ = normalise_rows(net_->forward(images.to(device_of(net_), /*non_blocking=*/true)));
  return z_eager_.detach();
}

void GraphedStep::backward_and_step(const torch::Tensor& grad_z) {
#ifdef INVP_CUDA_GRAPHS
  if (replaying_) {
    graphs_->grad_z.copy_(grad_z);
    graphs_->backward.replay();
    replaying_ = false;
    ++replays_;
    ++steps_;
    return;
  }
#endif
  if (!z_eager_.defined()) throw Error("", "internal: backward_and_step() without a forward()");
  opt_.zero_grad();
  z_eager_.backward(grad_z);
  z_eager_ = torch::Tensor();
  if (!(device_of(net_).is_cuda() && foreach_sgd_step(opt_))) opt_.step();
  ++steps_;
}

}  // namespace invp::train
