#include <invp/core/clock.h>
#include <invp/core/error.h>
#include <invp/core/hash.h>
#include <invp/core/log.h>
#include <invp/core/progress.h>
#include <invp/data/decode.h>
#include <invp/data/loader.h>
#include <invp/model/precision.h>
#include <invp/search/embedder.h>
#include <invp/store/embedding_store.h>

#include <chrono>
#include <filesystem>
#include <random>

namespace invp::search {
namespace {

data::LoaderOptions eval_loader(const data::AugmentConfig& transform, int batch_size, int workers) {
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.workers = std::max(1, workers);
  lo.shuffle = false;
  lo.drop_last = false;
  lo.augment = transform;
  return lo;
}
}  // namespace

Embedder::Output Embedder::output_of(const std::string& features) {
  if (features == "head") return Output::head;
  if (features == "backbone") return Output::backbone;
  if (features == "auto") return Output::as_trained;
  throw Error("", "features must be auto, head or backbone, not '" + features + "'");
}

Embedder::Embedder(const std::string& model_pt, const std::string& device, Output output,
                   const std::string& precision)
    : path_(model_pt), device_(device == "cuda" ? torch::kCUDA : torch::kCPU), output_(output) {
  if (device != "cpu" && device != "cuda")
    throw Error("", "--device must be cpu or cuda, not '" + device + "'");
  if (precision != "auto" && precision != "fp32" && precision != "bf16")
    throw Error("", "--precision must be auto, fp32 or bf16, not '" + precision + "'");
  if (device_.is_cuda() && precision == "bf16")
    throw Error("", "--precision bf16 is for --device cpu in this version", "use --precision fp32");
  if (device_.is_cuda() && !torch::cuda::is_available())
    throw Error("", "--device cuda: no CUDA device or this LibTorch has no CUDA", "use --device cpu");
  // Inference has no BatchNorm backward, so with AMX bf16 pays at width 8 as well (BENCHMARKS.md,
  // "bf16 and channels-last embedding").
  precision_ = device_.is_cuda() ? "fp32" : model::resolve_cpu_precision(precision, /*auto_bf16_pays=*/true);
  net_ = model::load_model(model_pt, &info_);
  hash_ = hash_file(model_pt);
  if (output_ == Output::as_trained) output_ = info_.features == "backbone" ? Output::backbone : Output::head;
  net_->to(device_);
  net_->eval();
  if (device_.is_cpu()) model::to_channels_last(*net_);  // model::forward's CPU layout
  transform_ = data::eval_config(data::small_image_preset(info_.input_size, info_.encoder.in_channels));
  transform_.mean = info_.mean;
  transform_.std = info_.std;
  transform_.resize_ratio = float(info_.input_size) / float(info_.resize);
}

torch::Tensor Embedder::embed(const torch::Tensor& images) {
  torch::NoGradGuard ng;
  if (images.dim() != 4 || images.size(1) != channels())
    throw Error(path_, "images must be N×" + std::to_string(channels()) + "×H×W for this model");
  auto x = images.to(device_, /*non_blocking=*/true);
  const bool bf16 = precision_ == "bf16";
  auto z = output_ == Output::head ? model::forward(*net_, x, bf16) : model::features(*net_, x, bf16);
  z = torch::nn::functional::normalize(z, torch::nn::functional::NormalizeFuncOptions().dim(1));
  return z.to(torch::kCPU, torch::kFloat32).contiguous();
}

torch::Tensor Embedder::embed_images(const std::vector<data::Image>& images) { return embed(inputs(images)); }

torch::Tensor Embedder::inputs(const std::vector<data::Image>& images) const {
  const int s = info_.input_size, c = channels();
  auto batch = torch::empty({int64_t(images.size()), c, s, s}, torch::kFloat32);
  std::mt19937_64 rng(0);  // the eval transform draws nothing
  for (size_t i = 0; i < images.size(); ++i) {
    auto img = data::augment(data::convert_channels(images[i], c), transform_, rng);
    data::normalise_into(img, transform_, batch.data_ptr<float>() + i * size_t(c) * s * s);
  }
  return batch;
}

namespace {
Features features_from_loader(data::Loader& loader, const std::function<torch::Tensor(const torch::Tensor&)>& f,
                              const std::string& what) {
  std::vector<torch::Tensor> feats, labels, ids;
  std::vector<std::string> paths;
  loader.start_epoch(1);
  Progress bar(what, int64_t(loader.batches_per_epoch()), "batches");
  int64_t done = 0;
  while (auto b = loader.next()) {
    feats.push_back(f(b->images));
    labels.push_back(b->labels);
    ids.push_back(b->indices);
    paths.insert(paths.end(), b->paths.begin(), b->paths.end());
    bar.update(++done);
  }
  bar.finish();
  if (feats.empty()) throw Error("", "no good images to " + what);
  return {torch::cat(feats), torch::cat(labels), torch::cat(ids), std::move(paths)};
}
}  // namespace

Features embed_dataset_in_memory(Embedder& embedder, std::shared_ptr<const data::Dataset> ds,
                                 int batch_size, int workers) {
  data::Loader loader(ds, eval_loader(embedder.transform(), batch_size, workers));
  return features_from_loader(loader, [&](const torch::Tensor& x) { return embedder.embed(x); }, "embed");
}

Features raw_pixel_features(std::shared_ptr<const data::Dataset> ds, int batch_size, int workers) {
  auto first = ds->get(0).image;
  data::AugmentConfig t;
  t.train = false;
  t.size = std::max(first.height, first.width);
  if (first.height != first.width)
    throw Error("", "raw-pixel baseline needs square images of one size");
  data::Loader loader(ds, eval_loader(t, batch_size, workers));
  return features_from_loader(
      loader,
      [](const torch::Tensor& x) {
        return torch::nn::functional::normalize(x.flatten(1),
                                                torch::nn::functional::NormalizeFuncOptions().dim(1));
      },
      "read pixels");
}

std::pair<int64_t, int64_t> shard_range(int64_t n, int shard, int shards) {
  if (shards < 1 || shard < 0 || shard >= shards)
    throw Error("", "shard " + std::to_string(shard) + "/" + std::to_string(shards) + " does not exist",
                "use i/N with 0 <= i < N");
  return {n * shard / shards, n * (shard + 1) / shards};
}

std::string shard_path(const std::string& out, int shard, int shards) {
  if (shards <= 1) return out;
  const std::string tag = std::to_string(shard) + "-of-" + std::to_string(shards);
  if (auto at = out.find("{shard}"); at != std::string::npos) return out.substr(0, at) + tag + out.substr(at + 7);
  std::filesystem::path p(out);
  return (p.parent_path() / (p.stem().string() + ".part-" + tag + p.extension().string())).string();
}

EmbedReport embed_to_file(Embedder& embedder, const std::string& source, const std::string& out,
                          const EmbedOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  auto whole = data::open_dataset(source, {embedder.channels(), false});
  const auto [first, last] = shard_range(int64_t(whole->size()), opts.shard, opts.shards);
  auto ds = opts.shards > 1 ? data::subset(whole, size_t(first), size_t(last - first)) : whole;
  store::StoreMeta meta;
  meta.dim = embedder.dim();
  meta.model_hash = embedder.model_hash();
  meta.model_path = std::filesystem::absolute(embedder.model_path()).string();
  meta.source = source;
  meta.precision = embedder.precision();
  meta.features = embedder.features();
  meta.categories = whole->class_names();
  if (opts.shards > 1) meta.shard = std::to_string(opts.shard) + "/" + std::to_string(opts.shards);
  store::EmbeddingWriter writer(out, meta, opts.chunk_rows);
  EmbedReport r;
  r.resumed_rows = writer.resume_rows();
  // Ids are source positions; `local` counts within this shard's slice.
  const int64_t next = std::max(writer.next_id(), first), next_local = next - first;
  if (next_local > 0) log::info("resuming " + out + " at item " + std::to_string(next) + " (" +
                          std::to_string(r.resumed_rows) + " rows already embedded)");
  // Restart at the batch boundary before `next`, so that every batch holds the same items as
  // in an uninterrupted run (results then match bitwise), and drop the rows already stored.
  const int64_t start = std::min<int64_t>(next_local - next_local % opts.batch_size, int64_t(ds->size()));
  auto rest = data::subset(ds, size_t(start), ds->size() - size_t(start));
  int64_t new_rows = 0;
  if (rest->size() > 0) {
    data::Loader loader(rest, eval_loader(embedder.transform(), opts.batch_size, opts.workers));
    const auto t_stream = std::chrono::steady_clock::now();
    loader.start_epoch(1);
    Progress bar("embed", int64_t(loader.batches_per_epoch()), "img", opts.batch_size);
    int64_t done = 0;
    while (auto b = loader.next()) {
      auto idx = b->indices + start + first;
      auto keep = idx.ge(next);
      auto emb = embedder.embed(b->images);
      store::Rows rows;
      if (!keep.all().item<bool>()) {
        auto sel = keep.nonzero().flatten();
        emb = emb.index_select(0, sel);
        idx = idx.index_select(0, sel);
        b->labels = b->labels.index_select(0, sel);
        std::vector<std::string> paths;
        for (int64_t i = 0; i < sel.size(0); ++i) paths.push_back(b->paths[size_t(sel[i].item<int64_t>())]);
        b->paths = std::move(paths);
      }
      if (idx.numel() > 0) {
        rows.embeddings = emb.contiguous();
        idx = idx.contiguous();
        rows.ids.assign(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel());
        auto lab = b->labels.to(torch::kInt32).contiguous();
        rows.labels.assign(lab.data_ptr<int32_t>(), lab.data_ptr<int32_t>() + lab.numel());
        rows.paths = std::move(b->paths);
        writer.append(rows);
        new_rows += rows.size();
      }
      bar.update(++done);
    }
    bar.finish();
    r.stream_seconds = seconds_since(t_stream);
    r.stream_images_per_second = new_rows / std::max(1e-9, r.stream_seconds);
    r.skipped_bad = int64_t(loader.bad_count());
  }
  const auto t_finish = std::chrono::steady_clock::now();
  writer.finish();
  r.finish_seconds = seconds_since(t_finish);
  r.rows = r.resumed_rows + new_rows;
  r.seconds = seconds_since(t0);
  r.images_per_second = new_rows / std::max(1e-9, r.seconds);
  return r;
}

}  // namespace invp::search
