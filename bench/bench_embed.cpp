// `invp embed` throughput against the bare forward pass of the same model (issue 4 target:
// embed ≥ 95 % of bare forward, decode overlapped).
//   bare:  the model's forward on one pre-made batch (B × C × H × W, eval mode, no grad),
//          repeated; images/s.
//   embed: embed_to_file over SOURCE into a temporary embeddings.h5 (decode + transform in
//          loader workers, forward, normalise, chunked HDF5 writes); images/s.
// Usage: bench_embed MODEL_PT [SOURCE] [--threads N] [--workers N] [--batch B] [--images N]
//                    [--precision fp32|bf16|auto] [--agreement]
//   SOURCE defaults to Fashion-MNIST's train split (embedded whole); the bare pass runs
//   --images images (default: as many as SOURCE has). --precision: the embedder's (as
//   `invp embed --precision`; default fp32).
//   --agreement instead embeds SOURCE in memory in fp32 and in bf16, twice each, alternating,
//   and prints each one's images/s, the per-row cosine between the two, and how many of each
//   row's exact top-10 neighbours in fp32 (cosine, over all of SOURCE, itself excluded) the bf16
//   embeddings find, for the first 5000 rows.
#include "bench_args.h"

#include <invp/core/threads.h>
#include <invp/data/dataset.h>
#include <invp/index/exact_knn.h>
#include <invp/search/embedder.h>

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <unistd.h>  // getpid
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>

using namespace invp;

namespace {
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

int agreement(const std::string& model, const std::string& source, int batch, int workers) {
  search::Embedder fp(model, "cpu", search::Embedder::Output::head, "fp32");
  search::Embedder bf(model, "cpu", search::Embedder::Output::head, "bf16");
  auto ds = data::open_dataset(source, {fp.channels(), false});
  search::Features f32, f16;
  for (int round = 0; round < 2; ++round) {
    for (auto* e : {&fp, &bf}) {
      auto t0 = std::chrono::steady_clock::now();
      auto f = search::embed_dataset_in_memory(*e, ds, batch, workers);
      const double s = seconds_since(t0);
      std::printf("round %d  %-4s  %9.0f img/s  (%lld images, %.2f s, decode + forward in memory)\n", round + 1,
                  e->precision().c_str(), double(f.features.size(0)) / s, (long long)f.features.size(0), s);
      (e == &fp ? f32 : f16) = std::move(f);
    }
  }
  auto cos = (f32.features * f16.features).sum(1);
  std::printf("per-row cosine fp32 vs bf16: min %.6f, mean %.6f\n", cos.min().item<double>(),
              cos.mean().item<double>());
  const int64_t q = std::min<int64_t>(5000, f32.features.size(0));
  const int k = 10;
  auto a = index::knn_inner_product(f32.features.slice(0, 0, q), f32.features, k, true).indices;
  auto b = index::knn_inner_product(f16.features.slice(0, 0, q), f16.features, k, true).indices;
  int64_t found = 0;
  auto pa = a.accessor<int64_t, 2>(), pb = b.accessor<int64_t, 2>();
  for (int64_t i = 0; i < q; ++i)
    for (int x = 0; x < k; ++x)
      for (int y = 0; y < k; ++y) found += pa[i][x] == pb[i][y];
  std::printf("top-%d neighbours of %lld rows: bf16 finds %.4f of fp32's\n", k, (long long)q,
              double(found) / double(q * k));
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  try {
    std::string model, source = "/usr/share/datasets/fashion-mnist:train", precision = "fp32";
    bool agree = false;
    int threads = 0, workers = 1, batch = 256;
    int64_t images = 0;
    int positional = 0;
    for (BenchArgs a(argc, argv); a.next();) {
      if (a.is("--threads")) threads = std::stoi(a.value());
      else if (a.is("--workers")) workers = std::stoi(a.value());
      else if (a.is("--batch")) batch = std::stoi(a.value());
      else if (a.is("--images")) images = std::stoll(a.value());
      else if (a.is("--precision")) precision = a.value();
      else if (a.is("--agreement")) agree = true;
      else if (positional++ == 0) model = a.arg();
      else source = a.arg();
    }
    if (model.empty()) {
      std::fprintf(stderr, "usage: bench_embed MODEL_PT [SOURCE] [--threads N] [--workers N] [--batch B] [--images N] "
                           "[--precision fp32|bf16|auto] [--agreement]\n");
      return 2;
    }
    const int t = resolve_thread_budget(threads);
    apply_thread_budget(t);
    if (agree) return agreement(model, source, batch, workers);
    search::Embedder emb(model, "cpu", search::Embedder::Output::head, precision);
    auto ds = data::open_dataset(source, {emb.channels(), false});
    if (images <= 0) images = int64_t(ds->size());

    // Bare forward: the same number of images in full batches of one pre-made tensor.
    const int side = emb.info().input_size;
    auto x = torch::randn({batch, emb.channels(), side, side});
    emb.embed(x);  // warm-up
    const int64_t reps = std::max<int64_t>(1, images / batch);
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t r = 0; r < reps; ++r) emb.embed(x);
    const double bare = double(reps * batch) / seconds_since(t0);

    // embed_to_file over the whole source.
    auto dir = std::filesystem::temp_directory_path() / ("invp_bench_embed_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string src = source;
    search::EmbedOptions o;
    o.batch_size = batch;
    o.workers = workers;
    auto rep = search::embed_to_file(emb, src, (dir / "out.h5").string(), o);
    std::filesystem::remove_all(dir);
    std::printf("threads %d, loader workers %d, batch %d, %lld images (%s), %s\n", t, workers, batch,
                (long long)rep.rows, source.c_str(), emb.precision().c_str());
    std::printf("bare forward   %9.0f img/s\n", bare);
    std::printf("invp embed     %9.0f img/s   (%.1f %% of bare forward; whole call, %.2f s)\n",
                rep.images_per_second, 100.0 * rep.images_per_second / bare, rep.seconds);
    std::printf("  streaming    %9.0f img/s   (%.1f %% of bare forward; decode + forward + chunk writes, %.2f s)\n",
                rep.stream_images_per_second, 100.0 * rep.stream_images_per_second / bare, rep.stream_seconds);
    std::printf("  fixed costs  opening the data set and the writer %.2f s, assembling the HDF5 file %.2f s\n",
                rep.seconds - rep.stream_seconds - rep.finish_seconds, rep.finish_seconds);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_embed: %s\n", e.what());
    return 1;
  }
}
