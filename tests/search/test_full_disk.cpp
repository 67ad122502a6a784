// Every kind of file invp writes, on a full disk: a clear error naming the file, and the
// previous good file intact (tests/full_disk.h). The checkpoint writer is in tests/train.
#include <invp/core/atomic_file.h>
#include <invp/data/montage.h>
#include <invp/index/ann_index.h>
#include <invp/model/model_io.h>
#include <invp/store/embedding_store.h>

#include <torch/torch.h>

#include <random>

#include "full_disk.h"

namespace fs = std::filesystem;
using invp::test::expect_fails_cleanly_on_full_disk;

namespace {
fs::path fresh_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("invp_full_disk_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}
invp::store::Rows rows(int64_t n, int64_t dim) {
  invp::store::Rows r;
  r.embeddings = torch::nn::functional::normalize(torch::randn({n, dim}),
                                                  torch::nn::functional::NormalizeFuncOptions().dim(1));
  for (int64_t i = 0; i < n; ++i) {
    r.ids.push_back(i);
    r.labels.push_back(int32_t(i % 3));
    r.paths.push_back("images/" + std::to_string(i) + ".png");
  }
  return r;
}
invp::store::StoreMeta meta(int64_t dim) {
  invp::store::StoreMeta m;
  m.dim = dim;
  m.model_hash = "feedface";
  return m;
}
}  // namespace

TEST(FullDisk, TextAndBinaryFiles) {
  auto d = fresh_dir("text");
  auto f = d / "metrics.jsonl";
  invp::write_file_atomically(f.string(), "{\"epoch\": 1}\n");
  const std::string big(200000, 'x');
  expect_fails_cleanly_on_full_disk(f, [&] { invp::write_file_atomically(f.string(), big); });
  fs::remove_all(d);
}

TEST(FullDisk, EmbeddingFiles) {
  auto d = fresh_dir("store");
  auto f = d / "embeddings.h5";
  invp::store::write_store(f.string(), meta(32), rows(10, 32));
  auto big = rows(2000, 32);
  // HDF5 writers run isolated (tests/full_disk.h): a file that failed to close poisons HDF5.
  expect_fails_cleanly_on_full_disk(
      f, [&] { invp::store::write_store(f.string(), meta(32), big); }, 16384, true);
  // The streaming writer (chunks in OUT.partial/, then the final file); chunks of 100 rows
  // fit under the limit, so the final HDF5 file is what fails.
  expect_fails_cleanly_on_full_disk(
      f,
      [&] {
        invp::store::EmbeddingWriter w(f.string(), meta(32), 100);
        w.append(big);
        w.finish();
      },
      65536, true);
  fs::remove_all(d);
}

TEST(FullDisk, ModelFiles) {
  auto d = fresh_dir("model");
  auto f = d / "model.pt";
  invp::model::ModelInfo info;
  info.encoder = {18, "small", 8, 1, "mlp-bn", 128};
  info.input_size = info.resize = 28;
  info.mean = {0.5f};
  info.std = {0.25f};
  invp::model::Encoder net(info.encoder);
  invp::model::save_model(net, info, f.string());
  torch::NoGradGuard ng;
  for (auto& p : net->parameters()) p.add_(1.0);  // different bytes
  expect_fails_cleanly_on_full_disk(f, [&] { invp::model::save_model(net, info, f.string()); });
  fs::remove_all(d);
}

TEST(FullDisk, MontagesAndIndexes) {
  auto d = fresh_dir("png");
  auto png = d / "montage.png";
  invp::data::Image small;
  small.width = small.height = 8;
  small.channels = 1;
  small.pixels.assign(64, 128);
  invp::data::write_montage({small}, {"one"}, 1, 32, png.string());
  std::vector<invp::data::Image> tiles(48);
  std::mt19937 rng(3);
  for (auto& t : tiles) {  // noise does not compress: the PNG is far over the limit
    t.width = t.height = 64;
    t.channels = 3;
    t.pixels.resize(64 * 64 * 3);
    for (auto& p : t.pixels) p = uint8_t(rng());
  }
  expect_fails_cleanly_on_full_disk(png, [&] { invp::data::write_montage(tiles, {}, 8, 64, png.string()); });

  auto idx = d / "index.faiss";
  auto make = [](int64_t n) {
    invp::index::AnnIndex a(invp::index::builtin_recipe("flat", 32), 32, n);
    a.add(rows(n, 32).embeddings, torch::arange(n, torch::kLong));
    return a;
  };
  make(10).write(idx.string());
  auto big = make(3000);
  expect_fails_cleanly_on_full_disk(idx, [&] { big.write(idx.string()); });
  fs::remove_all(d);
}
