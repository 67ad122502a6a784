// Turning images into embeddings with a trained model (model.pt + model.json): one image,
// a batch, a whole data set in memory, or a data set streamed into embeddings.h5.
// Conventions: images go through the model's eval transform (resize + centre crop,
// per-channel mean/std from model.json) with the model's channel count; embeddings come
// back as float32 N×D CPU tensors with L2-normalised rows.
#pragma once
#include <invp/data/augment.h>
#include <invp/data/dataset.h>
#include <invp/model/encoder.h>
#include <invp/model/model_io.h>

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace invp::search {

class Embedder {
 public:
  // What embed() returns: the head's D-dim output (what training, the bank and the indexes
  // use), or the pooled F-dim backbone features before the head (an evaluation protocol);
  // as_trained: whichever model.json's "embed" names (head unless training chose backbone).
  enum class Output { head, backbone, as_trained };
  // Loads MODEL_PT (and model.json beside it) onto DEVICE ("cpu" or "cuda"). PRECISION:
  // "fp32", "bf16" (CPU only: the backbone in bfloat16, faster with AMX; rows close to fp32's
  // but not equal, so a few near-tied neighbours swap; BENCHMARKS.md, "bf16 and channels-last
  // embedding") or "auto" (bf16 on a CPU with AMX, else fp32). Throws invp::Error for
  // bf16 on a GPU or on a CPU without bf16 instructions.
  explicit Embedder(const std::string& model_pt, const std::string& device = "cpu",
                    Output output = Output::as_trained, const std::string& precision = "fp32");
  const model::ModelInfo& info() const { return info_; }
  const std::string& model_path() const { return path_; }
  const std::string& model_hash() const { return hash_; }  // XXH3-128 of model.pt's bytes
  const std::string& precision() const { return precision_; }  // resolved: "fp32" or "bf16"
  std::string features() const { return output_ == Output::head ? "head" : "backbone"; }
  // "head", "backbone" (what StoreMeta::features records) or "auto" (as_trained); anything else
  // throws invp::Error.
  static Output output_of(const std::string& features);
  int channels() const { return info_.encoder.in_channels; }
  int dim() const { return output_ == Output::head ? info_.encoder.dim : info_.encoder.feature_width(); }
  data::AugmentConfig transform() const { return transform_; }

  // images: N×C×H×W normalised float (what the loader makes with transform()).
  torch::Tensor embed(const torch::Tensor& images);
  // Decoded images of any size; converted to the model's channels and transformed here.
  torch::Tensor embed_images(const std::vector<data::Image>& images);
  // What embed_images() feeds the model: N×C×S×S, the eval transform of each image.
  torch::Tensor inputs(const std::vector<data::Image>& images) const;

 private:
  std::string path_, hash_, precision_;
  model::ModelInfo info_;
  model::Encoder net_{nullptr};
  torch::Device device_{torch::kCPU};
  Output output_ = Output::head;
  data::AugmentConfig transform_;
};

// Every good item of DS (bad ones skipped with a warning, as in training) embedded in memory.
struct Features {
  torch::Tensor features;  // n×D float32, normalised rows
  torch::Tensor labels;    // n int64 (−1 unknown)
  torch::Tensor ids;       // n int64 data-set indices
  std::vector<std::string> paths;  // n source paths
};
Features embed_dataset_in_memory(Embedder& embedder, std::shared_ptr<const data::Dataset> ds,
                                 int batch_size = 256, int workers = 1);
// The raw-pixel baseline: pixels/255 of each item at its own size (all items must share one
// size), flattened and L2-normalised.
Features raw_pixel_features(std::shared_ptr<const data::Dataset> ds, int batch_size = 512,
                            int workers = 1);

struct EmbedOptions {
  int batch_size = 256;
  int workers = 1;
  int64_t chunk_rows = 8192;  // rows per resumable chunk of OUT.partial
  // Embed only the shard-th of `shards` contiguous slices of the source (ids stay positions in
  // the whole source): parts that index build/add take together, made on several machines.
  int shard = 0, shards = 1;
};

// The contiguous slice [begin, end) of n items that shard i of `shards` embeds.
std::pair<int64_t, int64_t> shard_range(int64_t n, int shard, int shards);
// OUT for shard i of N: "{shard}" in `out` replaced by "I-of-N", else ".part-I-of-N" put
// before the extension (emb.h5 → emb.part-0-of-4.h5); `out` itself when shards is 1.
std::string shard_path(const std::string& out, int shard, int shards);
struct EmbedReport {
  int64_t rows = 0;          // rows in the finished file
  int64_t resumed_rows = 0;  // rows found already done in OUT.partial
  int64_t skipped_bad = 0;
  double seconds = 0;        // this run's wall time
  double images_per_second = 0;
  // The streaming part alone (decode, forward, chunk writes), without opening the data set
  // or assembling the final file: the rate to compare with the model's bare forward.
  double stream_seconds = 0;
  double stream_images_per_second = 0;
  double finish_seconds = 0;  // assembling OUT from the chunks
};
// Streams SOURCE (or its opts.shard-th slice) through the model into OUT (embeddings.h5
// layout, store/embedding_store.h):
// memory does not grow with N, decoding overlaps the forward pass, a killed run resumes
// from its last complete chunk when rerun with the same model and source.
EmbedReport embed_to_file(Embedder& embedder, const std::string& source, const std::string& out,
                          const EmbedOptions& opts);

}  // namespace invp::search
