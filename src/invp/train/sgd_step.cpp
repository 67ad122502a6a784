#include <invp/train/sgd_step.h>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace invp::train {
namespace {
// The key torch::optim keeps a parameter's state under: the address of its TensorImpl, as a
// string in LibTorch 1.x (printed as c10::guts::to_string prints it), as the pointer itself
// where the map is keyed by pointers.
template <class Map>
typename Map::key_type state_key(const Map&, const at::Tensor& p) {
  using Key = typename Map::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream s;
    s << p.unsafeGetTensorImpl();
    return s.str();
  } else {
    return reinterpret_cast<Key>(p.unsafeGetTensorImpl());
  }
}
}  // namespace

at::Tensor momentum_buffer(torch::optim::SGD& opt, const at::Tensor& p) {
  auto& state = opt.state();
  auto it = state.find(state_key(state, p));
  if (it == state.end()) return {};
  return static_cast<torch::optim::SGDParamState&>(*it->second).momentum_buffer();
}

void set_momentum_buffer(torch::optim::SGD& opt, const at::Tensor& p, const at::Tensor& buf) {
  auto& state = opt.state();
  auto key = state_key(state, p);
  if (!buf.defined()) {
    state.erase(key);
    return;
  }
  auto st = std::make_unique<torch::optim::SGDParamState>();
  st->momentum_buffer(buf);
  state[key] = std::move(st);
}

namespace {
// grads: nullptr reads p.grad(); else one entry per parameter of opt's groups, in order.
bool sgd_step(torch::optim::SGD& opt, const std::vector<at::Tensor>* grads) {
  struct Group {
    std::vector<at::Tensor> params, grads, bufs;
    const torch::optim::SGDOptions* o;
  };
  std::vector<Group> groups;
  size_t i = 0;
  for (auto& g : opt.param_groups()) {
    Group gr;
    gr.o = &static_cast<const torch::optim::SGDOptions&>(g.options());
    if (gr.o->nesterov() || gr.o->momentum() == 0) return false;
    for (auto& p : g.params()) {
      if (grads && i >= grads->size()) return false;
      const at::Tensor grad = grads ? (*grads)[i++] : p.grad();
      if (!grad.defined()) continue;
      auto buf = momentum_buffer(opt, p);
      if (!buf.defined()) return false;  // the first step creates the buffers
      gr.params.push_back(p);
      gr.grads.push_back(grad);
      gr.bufs.push_back(buf);
    }
    groups.push_back(std::move(gr));
  }
  if (grads && i != grads->size()) return false;
  c10::NoGradGuard no_grad;
  for (auto& g : groups) {
    if (g.params.empty()) continue;
    const auto& o = *g.o;
    // d = grad + wd·p; buf = m·buf + (1 − dampening)·d; p −= lr·buf (torch::optim::SGD's order)
    auto d = o.weight_decay() != 0 ? at::_foreach_add(g.grads, g.params, o.weight_decay()) : g.grads;
    at::_foreach_mul_(g.bufs, o.momentum());
    at::_foreach_add_(g.bufs, d, 1 - o.dampening());
    at::_foreach_add_(g.params, g.bufs, -o.lr());
  }
  return true;
}
}  // namespace

bool foreach_sgd_step(torch::optim::SGD& opt) { return sgd_step(opt, nullptr); }
bool foreach_sgd_step(torch::optim::SGD& opt, const std::vector<at::Tensor>& grads) {
  return sgd_step(opt, &grads);
}

}  // namespace invp::train
