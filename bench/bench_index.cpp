// Every index recipe on one collection: build time, the tuned search parameter, recall@k
// against exact search on held-out queries, queries/s at that setting, and the index size
// (all as `invp index build` measures and records them in index.json).
// Usage: bench_index EMBEDDINGS_H5 [MORE_H5 ...] [--threads N] [--recipes flat,hnsw,...]
//                    [--target-recall 0.95]
//   Several files are concatenated first (e.g. Fashion-MNIST train + test = 70k), ids
//   renumbered. Recipes default to flat, hnsw, ivf-flat, ivf-pq and auto.
//        bench_index --write-synthetic OUT_H5 N [D 128]
//   writes N unit vectors around 1,000 random centres (an embeddings.h5 without a model),
//   written in blocks so that memory stays small, for `invp index build` memory runs.
#include "bench_args.h"

#include <invp/core/threads.h>
#include <invp/search/index_dir.h>
#include <invp/store/embedding_store.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <unistd.h>  // getpid
#include <exception>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

using namespace invp;

namespace {
int write_synthetic(const std::string& out, int64_t n, int64_t dim) {
  store::StoreMeta meta;
  meta.dim = dim;
  meta.source = "synthetic: " + std::to_string(n) + " vectors around 1000 centres";
  store::EmbeddingWriter w(out, meta);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto centres = at::randn({1000, dim}, gen);
  for (int64_t s = 0; s < n; s += 65536) {
    const int64_t b = std::min<int64_t>(65536, n - s);
    auto which = at::randint(0, 1000, {b}, gen);
    auto v = centres.index_select(0, which) + 0.5 * at::randn({b, dim}, gen);
    store::Rows r;
    r.embeddings = v / v.norm(2, {1}, true);
    auto label = which.accessor<int64_t, 1>();
    for (int64_t i = 0; i < b; ++i) {
      r.ids.push_back(s + i);
      r.labels.push_back(int32_t(label[i]));
      r.paths.push_back("synthetic#" + std::to_string(s + i));
    }
    w.append(r);
  }
  w.finish();
  std::printf("wrote %lld x %lld vectors to %s\n", (long long)n, (long long)dim, out.c_str());
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 4 && std::string(argv[1]) == "--write-synthetic")
      return write_synthetic(argv[2], std::stoll(argv[3]), argc > 4 ? std::stoll(argv[4]) : 128);
    std::vector<std::string> files, recipes{"flat", "hnsw", "ivf-flat", "ivf-pq", "auto"};
    int threads = 0;
    double target = 0.95;
    for (BenchArgs a(argc, argv); a.next();) {
      if (a.is("--threads")) threads = std::stoi(a.value());
      else if (a.is("--target-recall")) target = std::stod(a.value());
      else if (a.is("--recipes")) {
        recipes.clear();
        std::stringstream ss(a.value());
        for (std::string r; std::getline(ss, r, ',');) recipes.push_back(r);
      } else files.push_back(a.arg());
    }
    if (files.empty()) {
      std::fprintf(stderr, "usage: bench_index EMBEDDINGS_H5 [MORE_H5 ...] [--threads N] [--recipes a,b] [--target-recall R]\n");
      return 2;
    }
    const int t = resolve_thread_budget(threads);
    apply_thread_budget(t);
    auto dir = std::filesystem::temp_directory_path() / ("invp_bench_index_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::string input = files[0];
    if (files.size() > 1) {  // concatenate, ids renumbered
      store::Rows all;
      store::StoreMeta meta;
      for (const auto& f : files) {
        store::EmbeddingReader r(f);
        if (meta.dim == 0) meta = r.meta();
        all.append(r.read_all());
      }
      for (size_t i = 0; i < all.ids.size(); ++i) all.ids[i] = int64_t(i);
      input = (dir / "all.h5").string();
      store::write_store(input, meta, all);
    }
    const int64_t n = store::EmbeddingReader(input).size();
    std::printf("%lld vectors, %d threads, target recall@10 %.2f\n", (long long)n, t, target);
    std::printf("%-9s %-28s %9s %-16s %9s %11s %10s\n", "recipe", "factory", "build s", "tuned",
                "recall@10", "queries/s", "index MB");
    for (const auto& r : recipes) {
      search::BuildOptions o;
      o.recipe = r;
      o.target_recall = target;
      auto out = (dir / ("index-" + r)).string();
      auto rep = search::build_index(input, out, o);
      std::string tuned;
      for (const auto& [k, v] : rep.info.search_params) tuned += k + " " + std::to_string(int64_t(v)) + " ";
      int64_t bytes = 0;
      for (const auto& [name, f] : rep.info.files)
        if (name.find(".faiss") != std::string::npos) bytes += f.bytes;
      std::printf("%-9s %-28s %9.1f %-16s %9.3f %11.0f %10.1f\n", r.c_str(), rep.info.factory.c_str(),
                  rep.seconds, tuned.empty() ? "-" : tuned.c_str(), rep.info.recall,
                  rep.info.queries_per_second, double(bytes) / 1e6);
      std::fflush(stdout);
      std::filesystem::remove_all(out);
    }
    std::filesystem::remove_all(dir);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_index: %s\n", e.what());
    return 1;
  }
}
