// The per-epoch kNN graph: exact FAISS build against the IVF build (index/ivf_knn.h) at
// several probe counts, on a real memory bank (from a training checkpoint) or synthetic rows.
// Prints the median build time, the share of exact edges the IVF graph keeps, and, when
// labels are given, each graph's share of same-label edges and the label purity of the
// positives propagation hands the loss (all of N(i), and its P hardest members) per depth.
// Usage: bench_graph CHECKPOINT_PT [--labels SOURCE] [--threads N] [--probes 4,8,16] [--reps 3]
//        bench_graph EMBEDDINGS_H5 [...]   rows of an `invp embed` file instead of a bank (the
//        graph the same model gives on un-augmented images; labels from the file if it has them)
//        bench_graph --synthetic N [--dim 128] [...]   (unit rows around N/60 random centres)
//        ... --device cuda [--check]   the GPU builds, one warm-up build each: LibTorch tiles
//        + top-k ("gpu torch"), and FAISS's bfKnn ("gpu faiss", what a CUDA training run uses
//        when the build has it); --check adds the CPU FAISS graph and the share of its edges
//        each GPU graph has
#include "bench_args.h"

#include <invp/core/threads.h>
#include <invp/data/dataset.h>
#include <invp/graph/knn_graph.h>
#include <invp/graph/propagate.h>
#include <invp/store/embedding_store.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize/input-archive.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace invp;

namespace {
double median_seconds(int reps, const std::function<graph::KnnGraph()>& build, graph::KnnGraph& out) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    out = build();
    t.push_back(out.build_seconds);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// For depths 1..3: mean |N(i)|, the share of N(i)'s members that carry the anchor's label, and
// the same share among its P hardest members (lowest similarity to the anchor, as the loss
// picks them; the anchor's own bank row stands in for its feature z_i).
void positives_table(const at::Tensor& bank, const at::Tensor& labels, const graph::KnnGraph& g,
                     const std::vector<int64_t>& hard) {
  std::printf("\n%-7s %9s %13s", "depth", "mean |N|", "N same %");
  for (int64_t p : hard) std::printf("  P=%-3lld hardest %%", (long long)p);
  std::printf("\n");
  const int64_t n = bank.size(0), chunk = 4096;
  {  // depth 1 split by mutual edges (i → j and j → i)
    auto nb = g.neighbors;  // N × k
    auto back = (nb.index_select(0, nb.flatten()).view({n, nb.size(1), nb.size(1)}) ==
                 at::arange(n, at::kLong).view({n, 1, 1})).any(2);
    auto same = labels.index_select(0, nb.flatten()).view_as(nb) == labels.unsqueeze(1);
    const double m = back.sum().item<double>(), all = double(nb.numel());
    std::printf("%-7s %9.1f %13.2f  (mutual edges %.1f %%: %.2f %% same; the others %.2f %%)\n", "1 mut",
                m / double(n), 100 * (same & back).sum().item<double>() / m, 100 * m / all,
                100 * (same & back).sum().item<double>() / m,
                100 * (same & back.logical_not()).sum().item<double>() / (all - m));
  }
  for (int depth = 1; depth <= 3; ++depth) {
    double members = 0, same_all = 0;
    std::vector<double> same_hard(hard.size(), 0), count_hard(hard.size(), 0);
    for (int64_t s = 0; s < n; s += chunk) {
      auto anchors = at::arange(s, std::min(n, s + chunk), at::kLong);
      auto prop = graph::propagate(g, anchors, depth);  // B × L, −1 padded
      auto valid = prop >= 0;
      auto idx = prop.clamp_min(0);
      auto sims = (bank.index_select(0, idx.flatten()).view({prop.size(0), prop.size(1), -1}) *
                   bank.index_select(0, anchors).unsqueeze(1)).sum(2);
      sims.masked_fill_(valid.logical_not(), 2.0);  // padding sorts after every real member
      auto same = labels.index_select(0, idx.flatten()).view_as(idx) == labels.index_select(0, anchors).unsqueeze(1);
      members += valid.sum().item<double>();
      same_all += (same & valid).sum().item<double>();
      for (size_t h = 0; h < hard.size(); ++h) {
        const int64_t p = std::min<int64_t>(hard[h], prop.size(1));
        auto pick = std::get<1>(sims.topk(p, 1, /*largest=*/false));
        auto ok = valid.gather(1, pick);
        same_hard[h] += (same.gather(1, pick) & ok).sum().item<double>();
        count_hard[h] += ok.sum().item<double>();
      }
    }
    std::printf("%-7d %9.1f %13.2f", depth, members / double(n), 100 * same_all / members);
    for (size_t h = 0; h < hard.size(); ++h) std::printf("  %16.2f", 100 * same_hard[h] / count_hard[h]);
    std::printf("\n");
  }
}
}  // namespace

int main(int argc, char** argv) {
  try {
    std::string checkpoint, labels_source;
    int64_t synthetic = 0, dim = 128;
    int threads = 0, reps = 3, k = 4;
    std::string device = "cpu";
    bool check = false;
    std::vector<int64_t> probes{4, 8, 16};
    for (BenchArgs a(argc, argv); a.next();) {
      if (a.is("--threads")) threads = std::stoi(a.value());
      else if (a.is("--labels")) labels_source = a.value();
      else if (a.is("--synthetic")) synthetic = std::stoll(a.value());
      else if (a.is("--dim")) dim = std::stoll(a.value());
      else if (a.is("--reps")) reps = std::max(1, std::stoi(a.value()));
      else if (a.is("--k")) k = std::stoi(a.value());
      else if (a.is("--device")) device = a.value();
      else if (a.is("--check")) check = true;
      else if (a.is("--probes")) {
        probes.clear();
        std::stringstream ss(a.value());
        for (std::string p; std::getline(ss, p, ',');) probes.push_back(std::stoll(p));
      } else checkpoint = a.arg();
    }
    if (checkpoint.empty() == (synthetic == 0)) {
      std::fprintf(stderr, "usage: bench_graph CHECKPOINT_PT | EMBEDDINGS_H5 | --synthetic N [--dim D] [--labels SOURCE] "
                           "[--threads N] [--probes 4,8,16] [--reps 3] [--k 4] [--device cpu|cuda [--check]]\n");
      return 2;
    }
    const int t = resolve_thread_budget(threads);
    apply_thread_budget(t);
    at::Tensor bank, labels;
    if (synthetic > 0) {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
      const int64_t centres = std::max<int64_t>(1, synthetic / 60);
      auto which = at::randint(0, centres, {synthetic}, gen);
      bank = at::randn({centres, dim}, gen).index_select(0, which) + 0.5 * at::randn({synthetic, dim}, gen);
      labels = which;
    } else if (checkpoint.size() > 3 && checkpoint.compare(checkpoint.size() - 3, 3, ".h5") == 0) {
      auto rows = store::EmbeddingReader(checkpoint).read_all();
      bank = rows.embeddings;
      if (!rows.labels.empty() && *std::min_element(rows.labels.begin(), rows.labels.end()) >= 0)
        labels = at::tensor(std::vector<int64_t>(rows.labels.begin(), rows.labels.end()), at::kLong);
    } else {
      torch::serialize::InputArchive archive;
      archive.load_from(checkpoint);
      archive.read("bank", bank);
    }
    bank = (bank / bank.norm(2, {1}, true)).to(at::kFloat).contiguous();
    if (!labels_source.empty()) {
      auto ds = data::open_dataset(labels_source, {});
      std::vector<int64_t> l(ds->size());
      for (size_t i = 0; i < l.size(); ++i) l[i] = ds->label(i);
      labels = at::tensor(l, at::kLong);
    }
    std::printf("bank %lld x %lld, k %d, %d threads, %s, median of %d\n", (long long)bank.size(0),
                (long long)bank.size(1), k, t, device.c_str(), reps);
    std::printf("%-14s %9s %14s %17s\n", "graph", "build s", "exact edges %", "same-label %");
    graph::KnnGraph exact;
    auto row = [&](const std::string& name, double secs, const graph::KnnGraph& g) {  // "-": no exact graph
      char edges[32] = "-";
      if (exact.neighbors.defined()) {
        auto hit = (g.neighbors.unsqueeze(2) == exact.neighbors.unsqueeze(1)).any(2);
        std::snprintf(edges, sizeof edges, "%.2f", 100 * hit.to(at::kDouble).mean().item<double>());
      }
      const double same = labels.defined() ? g.stats(labels).same_label_share : -1;
      std::printf("%-14s %9.3f %14s %17s\n", name.c_str(), secs, edges,
                  same >= 0 ? std::to_string(100 * same).substr(0, 6).c_str() : "-");
    };
    if (device == "cuda") {
      if (!at::hasCUDA()) throw std::runtime_error("--device cuda: no CUDA device or this LibTorch has no CUDA");
      const auto on_gpu = bank.to(at::kCUDA);
      if (check) {
        const double te = median_seconds(1, [&] { return graph::KnnGraph::build(bank, k); }, exact);
        row("cpu exact", te, exact);
      }
      // Each GPU path after one warm-up build (cuBLAS handle, allocator, FAISS's scratch memory).
      auto gpu_row = [&](const std::string& name, auto build) {
        graph::KnnGraph g = build();
        const double tg = median_seconds(reps, build, g);
        row(name, tg, g);
      };
      gpu_row("gpu torch", [&] { return graph::KnnGraph::build_tensor_ops(on_gpu, k); });
      if (graph::KnnGraph::faiss_gpu_built())
        gpu_row("gpu faiss", [&] { return graph::KnnGraph::build_faiss_gpu(on_gpu, k); });
      else
        std::printf("gpu faiss: not in this build (configure with INVP_FAISS_GPU_SOURCE)\n");
      return 0;
    } else if (device != "cpu") {
      throw std::runtime_error("--device must be cpu or cuda");
    }
    const double te = median_seconds(reps, [&] { return graph::KnnGraph::build(bank, k); }, exact);
    row("exact", te, exact);
    for (int64_t p : probes) {
      graph::KnnGraph g;
      const double ti = median_seconds(reps, [&] { return graph::KnnGraph::build_ivf(bank, k, p, 0); }, g);
      row("ivf probes " + std::to_string(p), ti, g);
    }
    if (labels.defined()) positives_table(bank, labels, exact, {4, 20});
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_graph: %s\n", e.what());
    return 1;
  }
}
