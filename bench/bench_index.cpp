// Every index recipe on one collection: build time, the tuned search parameter, recall@k
// against exact search on held-out queries, queries/s at that setting, and the index size
// (all as `invp index build` measures and records them in index.json).
// Usage: bench_index EMBEDDINGS_H5 [MORE_H5 ...] [--threads N] [--recipes flat,hnsw,...]
//                    [--target-recall 0.95]
//   Several files are concatenated first (e.g. Fashion-MNIST train + test = 70k), ids
//   renumbered. Recipes default to flat, hnsw, ivf-flat, ivf-pq and auto.
#include <invp/core/threads.h>
#include <invp/search/index_dir.h>
#include <invp/store/embedding_store.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

using namespace invp;

int main(int argc, char** argv) {
  try {
    std::vector<std::string> files, recipes{"flat", "hnsw", "ivf-flat", "ivf-pq", "auto"};
    int threads = 0;
    double target = 0.95;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&] {
        if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
        return std::string(argv[++i]);
      };
      if (a == "--threads") threads = std::stoi(next());
      else if (a == "--target-recall") target = std::stod(next());
      else if (a == "--recipes") {
        recipes.clear();
        std::stringstream ss(next());
        for (std::string r; std::getline(ss, r, ',');) recipes.push_back(r);
      } else files.push_back(a);
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
