#include <invp/core/atomic_file.h>
#include <invp/core/error.h>
#include <invp/train/checkpoint.h>

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

void write_checkpoint(const std::string& path, const Checkpoint& meta, model::EncoderImpl& net,
                      torch::optim::SGD& opt, const torch::Tensor& bank, const torch::Tensor& graph) {
  write_file_atomically(path, serialize_checkpoint(meta, net, opt, bank, graph));
}

Checkpoint read_checkpoint(const std::string& path) {
  Checkpoint c;
  c.path = path;
  try {
    torch::serialize::InputArchive a;
    a.load_from(path);
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
  }
  return c;
}

void load_checkpoint_into(const Checkpoint& c, model::EncoderImpl& net, torch::optim::SGD& opt,
                          torch::Tensor& bank, torch::Tensor& graph) {
  try {
    torch::serialize::InputArchive a, m, o;
    a.load_from(c.path, bank.device());  // onto the training device, whichever wrote it
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
