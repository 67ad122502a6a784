// Synthetic clustered 128-d unit vectors for bench/bigindex.sh, written as the parts of one
// source (embeddings.h5 layout, shard "i/N", ids = positions in the whole), plus a sample.
//   bench_bigindex_gen N SLICE_ROWS SAMPLE_ROWS OUT_PREFIX [DIM]
// writes OUT_PREFIX.part-i-of-P.h5 (P = ceil(N / SLICE_ROWS)) and OUT_PREFIX.sample.h5.
// Vector i depends only on (i, seed), so parts are reproducible one at a time.
#include <invp/store/embedding_store.h>

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <string>

using namespace invp;

namespace {
constexpr int64_t kClusters = 1000;

// Within a cluster, points spread mostly along a few shared directions (`basis`, kSpread×D)
// plus a little isotropic noise: embeddings have a low intrinsic dimension, and isotropic
// noise alone in 128-d would make every point of a cluster about equally near every other,
// which no compressed code (nor any real embedding) reproduces.
constexpr int64_t kSpread = 16;
torch::Tensor rows(const torch::Tensor& centers, const torch::Tensor& basis, int64_t begin, int64_t count) {
  auto g = at::detail::createCPUGenerator(uint64_t(begin) * 2654435761ULL + 17);
  auto pick = torch::randint(0, kClusters, {count}, g, torch::kLong);
  auto x = centers.index_select(0, pick) + torch::matmul(torch::randn({count, kSpread}, g), basis) +
           0.05 * torch::randn({count, centers.size(1)}, g);
  return (x / x.norm(2, 1, true)).contiguous();
}

void write(const std::string& path, const torch::Tensor& centers, const torch::Tensor& basis, int64_t begin, int64_t count,
           const std::string& shard) {
  store::StoreMeta m;
  m.dim = centers.size(1);
  m.model_hash = "synthetic-clustered";
  m.source = "synthetic";
  m.shard = shard;
  m.with_embeddings = true;
  store::EmbeddingWriter w(path, m, 65536);
  for (int64_t b = begin; b < begin + count; b += 65536) {
    const int64_t c = std::min<int64_t>(65536, begin + count - b);
    store::Rows r;
    r.embeddings = rows(centers, basis, b, c);
    for (int64_t i = 0; i < c; ++i) {
      r.ids.push_back(b + i);
      r.paths.push_back("v" + std::to_string(b + i));
      r.labels.push_back(-1);
    }
    w.append(r);
  }
  w.finish();
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s N SLICE_ROWS SAMPLE_ROWS OUT_PREFIX [DIM]\n", argv[0]);
    return 2;
  }
  const int64_t n = std::atoll(argv[1]), slice = std::atoll(argv[2]), sample = std::atoll(argv[3]);
  const std::string prefix = argv[4];
  const int64_t dim = argc > 5 ? std::atoll(argv[5]) : 128;
  torch::manual_seed(1);
  auto centers = torch::randn({kClusters, dim});
  auto basis = 0.6 * torch::randn({kSpread, dim});
  const int64_t parts = (n + slice - 1) / slice;
  for (int64_t p = 0; p < parts; ++p) {
    const int64_t b = p * slice, c = std::min(slice, n - b);
    const std::string tag = std::to_string(p) + "-of-" + std::to_string(parts);
    write(prefix + ".part-" + tag + ".h5", centers, basis, b, c, std::to_string(p) + "/" + std::to_string(parts));
    std::printf("%s.part-%s.h5\n", prefix.c_str(), tag.c_str());
  }
  // The sample is the first rows of the source: the generator's clusters are uniform over ids.
  write(prefix + ".sample.h5", centers, basis, 0, std::min(sample, n), "");
  return 0;
}
