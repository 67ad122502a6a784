// Gradients averaged over ranks in buckets, the way LibTorch's DistributedDataParallel does it:
// the parameters are grouped in the reverse of their order (roughly the order backward produces
// their gradients), and with `overlap` a gradient hook copies each gradient into its bucket as
// backward produces it and starts the bucket's allreduce as soon as the bucket is full, while
// backward goes on with the layers below. Buckets start in the same order on every rank (a full
// bucket waits for the ones before it), so the collectives match however the hooks interleave.
// Without `overlap`, finish() copies and starts every bucket after backward.
#pragma once
#include <invp/train/distributed.h>

#include <torch/torch.h>

#include <memory>
#include <utility>
#include <vector>

namespace invp::train {

class GradientBuckets {
 public:
  // `bucket_elements` 0: about an eighth of the parameters a bucket, between 64 Ki and 6.25 Mi
  // floats (DistributedDataParallel's 25 MB cap).
  GradientBuckets(std::shared_ptr<DistGroup> dist, std::vector<torch::Tensor> params, bool overlap,
                  int64_t bucket_elements = 0);
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  // Before backward. `stop`: this rank wants to stop; it rides in the last bucket.
  void prepare(bool stop);
  // After backward: starts the buckets the hooks have not, waits for all, and replaces every
  // parameter's gradient by its mean over ranks (a parameter backward did not reach counts as a
  // zero gradient). Returns whether any rank asked to stop.
  bool finish();

  size_t buckets() const { return buckets_.size(); }
  // Buckets started from hooks during the last backward (0 without overlap).
  size_t started_early() const { return started_early_; }

 private:
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;
    torch::Tensor flat;  // the gradients back to back (+ the stop flag in the last bucket)
    size_t waiting = 0;  // gradients not yet copied in
    bool started = false;
    DistGroup::Pending work;
  };
  void arrived(size_t param, const torch::Tensor& grad);
  void start(Bucket& b);
  torch::Tensor slot(size_t param);

  std::shared_ptr<DistGroup> dist_;
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, size_t>> where_;  // parameter -> (bucket, slot)
  std::vector<char> copied_;
  std::vector<std::pair<size_t, unsigned>> hooks_;  // (parameter, hook handle)
  size_t next_ = 0;  // the first bucket not started
  size_t started_early_ = 0;
  bool armed_ = false;
};

}  // namespace invp::train
