// checkpoint.pt: model, optimiser, memory bank, kNN graph, epoch/step and the config,
// one LibTorch archive written atomically (temp + rename). No RNG state is needed: the
// loader's augmentation and order derive from (seed, epoch, index) and torch's RNG is
// used only at initialisation.
#pragma once
#include <invp/model/encoder.h>

#include <torch/optim/sgd.h>

#include <cstdint>
#include <memory>
#include <string>

namespace invp::train {
constexpr int64_t kCheckpointFormatVersion = 1;

struct Checkpoint {
  int epoch = 1;       // epoch in progress (1-based)
  int64_t step = 0;    // steps of that epoch already done
  std::string config_json;
  // Filled by read_checkpoint; applied by load_checkpoint_into.
  std::string path;
  std::string bytes;  // the archive itself when it came over the wire (rank 0's file), else empty
};

// The archive's bytes (tensors on a GPU are copied to the host); write_checkpoint below
// writes them atomically.
std::string serialize_checkpoint(const Checkpoint& meta, model::EncoderImpl& net, torch::optim::SGD& opt,
                                 const torch::Tensor& bank, const torch::Tensor& graph);

// A second copy of everything a checkpoint and model.pt hold (weights, BatchNorm statistics,
// optimiser options and momentum, bank, graph) on the training device. capture() fills it with
// device-side copies (on a GPU queued, not waited for; on a CPU a memcpy), so that the slow
// part of a checkpoint (the copy to the host and the archive) can run on another thread while
// training goes on. The bytes are what serialize_checkpoint / serialize_model give for the
// state at capture time. Not thread-safe: serialise one capture before taking the next.
class CheckpointSnapshot {
 public:
  CheckpointSnapshot(const model::EncoderConfig& cfg, torch::Device device);
  void capture(const Checkpoint& meta, model::EncoderImpl& net, torch::optim::SGD& opt, const torch::Tensor& bank,
               const torch::Tensor& graph);
  std::string checkpoint_bytes();
  std::string model_bytes();

 private:
  model::Encoder net_{nullptr};
  std::unique_ptr<torch::optim::SGD> opt_;
  torch::Tensor bank_, graph_;
  Checkpoint meta_;
};

void write_checkpoint(const std::string& path, const Checkpoint& meta, model::EncoderImpl& net,
                      torch::optim::SGD& opt, const torch::Tensor& bank, const torch::Tensor& graph);
// Reads the metadata from `path`, or from `bytes` (the file's contents, read elsewhere) when
// given; throws invp::Error for a missing or corrupt file.
Checkpoint read_checkpoint(const std::string& path, std::string bytes = {});
void load_checkpoint_into(const Checkpoint& c, model::EncoderImpl& net, torch::optim::SGD& opt,
                          torch::Tensor& bank, torch::Tensor& graph);
}  // namespace invp::train
