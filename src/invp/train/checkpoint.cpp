#include <invp/core/atomic_file.h>
#include <invp/core/error.h>
#include <invp/model/model_io.h>
#include <invp/train/checkpoint.h>
#include <invp/train/sgd_step.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <sstream>

namespace invp::train {

std::string serialize_checkpoint(const Checkpoint& meta, model::EncoderImpl& net, torch::optim::SGD& opt,
                                 const torch::Tensor& bank, const torch::Tensor& graph) {
  torch::serialize::OutputArchive root, m, o;
  net.save(m);
  opt.save(o);
  root.write("model", m);
  root.write("optimizer", o);
  root.write("bank", bank);
  root.write("graph", graph);
  root.write("format_version", torch::tensor(kCheckpointFormatVersion));
  root.write("epoch", torch::tensor(int64_t(meta.epoch)));
  root.write("step", torch::tensor(meta.step));
  root.write("config", c10::IValue(meta.config_json));
  // In memory first: LibTorch's file writer aborts the process on a full disk (see save_model).
  std::ostringstream bytes;
  root.save_to(bytes);
  return bytes.str();
}

CheckpointSnapshot::CheckpointSnapshot(const model::EncoderConfig& cfg, torch::Device device) {
  // Building an encoder draws its initial weights from torch's default generator; put its
  // state back so that owning a snapshot changes nothing else in the run.
  auto gen = at::detail::getDefaultCPUGenerator();
  auto rng = gen.get_state();
  net_ = model::Encoder(cfg);
  gen.set_state(rng);
  net_->to(device);
  opt_ = std::make_unique<torch::optim::SGD>(net_->parameters(), torch::optim::SGDOptions(0));
}

void CheckpointSnapshot::capture(const Checkpoint& meta, model::EncoderImpl& net, torch::optim::SGD& opt,
                                 const torch::Tensor& bank, const torch::Tensor& graph) {
  c10::NoGradGuard no_grad;
  auto copy_all = [](const std::vector<torch::Tensor>& from, const std::vector<torch::Tensor>& to) {
    TORCH_CHECK(from.size() == to.size(), "snapshot: the model's tensors do not match");
    for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i], /*non_blocking=*/true);
  };
  copy_all(net.parameters(), net_->parameters());
  copy_all(net.buffers(), net_->buffers());
  auto& groups = opt.param_groups();
  auto& mine = opt_->param_groups();
  TORCH_CHECK(groups.size() == 1 && mine.size() == 1, "snapshot: one parameter group expected");
  static_cast<torch::optim::SGDOptions&>(mine[0].options()) =
      static_cast<const torch::optim::SGDOptions&>(groups[0].options());
  auto params = groups[0].params(), own = mine[0].params();
  TORCH_CHECK(params.size() == own.size(), "snapshot: the optimiser's parameters do not match");
  for (size_t i = 0; i < params.size(); ++i) {
    auto buf = momentum_buffer(opt, params[i]);
    auto kept = momentum_buffer(*opt_, own[i]);
    if (buf.defined() && kept.defined()) kept.copy_(buf, /*non_blocking=*/true);
    else set_momentum_buffer(*opt_, own[i], buf.defined() ? buf.clone() : buf);
  }
  if (!bank_.defined() || !bank_.sizes().equals(bank.sizes())) bank_ = torch::empty_like(bank);
  bank_.copy_(bank, /*non_blocking=*/true);
  graph_ = graph.clone();
  meta_ = meta;
}

std::string CheckpointSnapshot::checkpoint_bytes() { return serialize_checkpoint(meta_, *net_, *opt_, bank_, graph_); }
std::string CheckpointSnapshot::model_bytes() { return model::serialize_model(net_); }

void write_checkpoint(const std::string& path, const Checkpoint& meta, model::EncoderImpl& net,
                      torch::optim::SGD& opt, const torch::Tensor& bank, const torch::Tensor& graph) {
  write_file_atomically(path, serialize_checkpoint(meta, net, opt, bank, graph));
}

namespace {
void load_archive(torch::serialize::InputArchive& a, const Checkpoint& c, c10::optional<torch::Device> device = {}) {
  if (c.bytes.empty())
    a.load_from(c.path, device);
  else
    a.load_from(c.bytes.data(), c.bytes.size(), device);
}
}  // namespace

Checkpoint read_checkpoint(const std::string& path, std::string bytes) {
  Checkpoint c;
  c.path = path;
  c.bytes = std::move(bytes);
  try {
    torch::serialize::InputArchive a;
    load_archive(a, c);
    torch::Tensor t;
    a.read("format_version", t);
    if (t.item<int64_t>() != kCheckpointFormatVersion)
      throw Error(path, "unsupported checkpoint format version " + std::to_string(t.item<int64_t>()));
    a.read("epoch", t);
    c.epoch = int(t.item<int64_t>());
    a.read("step", t);
    c.step = t.item<int64_t>();
    c10::IValue v;
    a.read("config", v);
    c.config_json = v.toStringRef();
  } catch (const c10::Error& e) {
    throw Error(path, "corrupt or unreadable checkpoint", "delete it to start over");
  } catch (const std::runtime_error& e) {  // a truncated archive in memory
    if (dynamic_cast<const Error*>(&e)) throw;
    throw Error(path, "corrupt or unreadable checkpoint", "delete it to start over");
  }
  return c;
}

void load_checkpoint_into(const Checkpoint& c, model::EncoderImpl& net, torch::optim::SGD& opt,
                          torch::Tensor& bank, torch::Tensor& graph) {
  try {
    torch::serialize::InputArchive a, m, o;
    load_archive(a, c, bank.device());  // onto the training device, whichever wrote it
    a.read("model", m);
    a.read("optimizer", o);
    net.load(m);
    opt.load(o);
    torch::Tensor b, g;
    a.read("bank", b);
    a.read("graph", g);
    if (!b.sizes().equals(bank.sizes()) || !g.sizes().equals(graph.sizes()))
      throw Error(c.path, "checkpoint bank/graph shape does not match this dataset and config",
                  "was it made for another dataset?");
    bank.copy_(b);
    graph = g;
  } catch (const c10::Error& e) {
    throw Error(c.path, "checkpoint does not match the model (different architecture?)");
  }
}
}  // namespace invp::train
