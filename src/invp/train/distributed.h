// Data-parallel training's collectives, on LibTorch's c10d: a TCPStore at rank 0's address for
// the rendezvous, then ProcessGroupGloo (CPU tensors) or ProcessGroupNCCL (CUDA tensors, where
// the LibTorch has it). No protocol of our own: every byte goes through c10d.
// Every call is collective: all ranks make the same calls in the same order with tensors of the
// same shapes. A peer that died or hangs turns into invp::Error (naming this rank and the
// operation) within the group's timeout, never a hang.
#pragma once
#include <invp/core/launch.h>

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace invp::train {

// Bytes and seconds spent in each kind of collective, on this rank (for metrics and bench/).
struct CommStats {
  double allreduce_bytes = 0, allgather_bytes = 0, broadcast_bytes = 0;
  double allreduce_seconds = 0, allgather_seconds = 0, broadcast_seconds = 0;
};

class DistGroup {
 public:
  // Joins the job `env` describes (env.distributed() must hold). `cuda`: NCCL for CUDA tensors
  // (throws invp::Error in a build without it). Blocks until every rank has joined or `timeout`.
  static std::shared_ptr<DistGroup> connect(const RankEnv& env, std::chrono::seconds timeout, bool cuda);
  ~DistGroup();

  int rank() const { return rank_; }
  int world() const { return world_; }
  const std::string& backend() const { return backend_; }

  // `t` (any shape, contiguous) takes root's values on every rank, in place.
  void broadcast(torch::Tensor& t, int root = 0);
  void broadcast(std::vector<torch::Tensor>& ts, int root = 0);
  // Root's bytes on every rank (lengths need not be known in advance).
  void broadcast_bytes(std::string& bytes, int root = 0);
  // Element-wise sum over ranks, in place.
  void allreduce_sum(torch::Tensor& t);
  // An asynchronous sum: started now, finished by wait() (for buckets of gradients).
  struct Pending {
    std::function<void()> wait;
  };
  Pending allreduce_sum_async(torch::Tensor& t);
  // Every rank's `t` (equal shapes) stacked along dim 0, in rank order.
  torch::Tensor all_gather(const torch::Tensor& t);
  void barrier();

  const CommStats& stats() const { return stats_; }

 private:
  DistGroup() = default;
  template <class F>
  void checked(const std::string& what, F f);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, world_ = 1;
  std::string backend_;
  CommStats stats_;
};

// The c10d backends this build can use: "gloo" and, in CUDA builds with NCCL, "nccl".
std::vector<std::string> distributed_backends();

// The epoch's global batch split over ranks: each rank's share, or invp::Error when `world`
// does not divide `global_batch`.
int per_rank_batch(int global_batch, int world);

}  // namespace invp::train
