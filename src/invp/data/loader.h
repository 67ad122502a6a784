// Batched, augmented, multi-threaded iteration over a Dataset for training.
// Batch b of epoch e always holds the same samples with the same augmentation (each
// sample's rng is seeded from (seed, epoch, sample index)), whatever the worker count.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include <invp/data/augment.h>
#include <invp/data/dataset.h>

namespace invp::data {

struct Batch {
  torch::Tensor images;   // N x C x H x W float, normalised
  torch::Tensor indices;  // int64 N, dataset indices
  torch::Tensor labels;   // int64 N
  std::vector<std::string> paths;  // N source paths ("<file>#<index>" inside containers)
};

struct LoaderOptions {
  int batch_size = 128;
  int workers = 1;
  int queue_batches = 4;  // ready batches held ahead of the consumer
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  AugmentConfig augment;
  bool strict = false;  // a bad item rethrows on the consumer instead of being skipped
  bool pin_memory = false;  // batches in page-locked memory (CUDA builds; for async copies)
  // Data-parallel sharding: batch b of the epoch is global batch b (batch_size · shards items
  // of the shuffled order) and this loader yields share `shard` of it, batch_size items. Same
  // seed, same global batches for any number of shards. With shards > 1 a share keeps its
  // size: a bad item's slot is filled with another item of the share (an all-bad share throws).
  int shard = 0, shards = 1;
};

class Loader {
 public:
  Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions opts);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts (or restarts) epoch `epoch` (1-based); abandons any unfinished epoch.
  // first_batch > 0 starts inside the epoch (resume): batches before it are never built.
  void start_epoch(int epoch, size_t first_batch = 0);
  // Batches of the current epoch consumed so far (returned, or skipped as all-bad), counting
  // those before first_batch: what start_epoch needs to continue at the same place.
  size_t position() const;
  // The next batch of the current epoch, or nullopt at its end. Batches whose items were
  // all bad are skipped. Rethrows a worker's error (bad items only when strict).
  std::optional<Batch> next();
  size_t batches_per_epoch() const;
  // Items skipped as bad since construction.
  size_t bad_count() const { return bad_.load(); }

 private:
  struct Slot {
    std::optional<Batch> batch;  // empty when every item was bad
    std::exception_ptr error;
  };
  void stop_workers();
  void worker_loop();
  Slot build(size_t b);

  std::shared_ptr<const Dataset> ds_;
  LoaderOptions opts_;
  int epoch_ = 0;
  std::vector<int64_t> order_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<size_t, Slot> ready_;
  size_t next_claim_ = 0, next_out_ = 0, n_batches_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;

  std::atomic<size_t> bad_{0};
  std::atomic<size_t> warned_{0};
};

}  // namespace invp::data
