// Filtered search against unfiltered search, per recipe, on synthetic clustered vectors:
// queries/s and recall@k (against exact search over the admitted items) with no filter and
// with filters admitting 100 %, 25 %, 10 % and 1 % of the items spread over the collection,
// and 25 % or 10 % that is one block of clusters (a "category"). Each recipe is tuned first (as
// `invp index build` does) to --target-recall unfiltered; filtered runs use that setting.
// Usage: bench_filter [--n 200000] [--dim 64] [--queries 500] [-k 10]
//                     [--recipes flat,ivf-flat,hnsw,ivf-pq] [--target-recall 0.95] [--threads N]
#include "bench_args.h"

#include <invp/core/threads.h>
#include <invp/index/ann_index.h>
#include <invp/index/exact_knn.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace invp;

namespace {
using Clock = std::chrono::steady_clock;

struct Data {
  at::Tensor base, queries, cluster;  // cluster: n int64, which of 1000 centres
};
Data synthetic(int64_t n, int64_t dim, int64_t q) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto centres = at::randn({1000, dim}, gen);
  auto which = at::randint(0, 1000, {n + q}, gen);
  auto v = centres.index_select(0, which) + 0.5 * at::randn({n + q, dim}, gen);
  v = (v / v.norm(2, {1}, true)).contiguous();
  return {v.slice(0, 0, n).contiguous(), v.slice(0, n).contiguous(), which.slice(0, 0, n).contiguous()};
}

// Exact top-k over the admitted rows (ids = row numbers).
at::Tensor truth(const Data& d, const index::IdSet* allowed, int k) {
  if (!allowed) return index::knn_inner_product(d.queries, d.base, k, false).indices;
  auto rows = at::tensor(allowed->members(), at::kLong);
  auto r = index::knn_inner_product(d.queries, d.base.index_select(0, rows).contiguous(), k, false);
  return rows.index_select(0, r.indices.flatten()).view(r.indices.sizes());
}

struct Run {
  double qps = 0, recall = 0;
};
Run measure(const index::AnnIndex& ann, const Data& d, const index::IdSet* allowed, int k) {
  auto once = [&] { return allowed ? ann.search(d.queries, k, *allowed) : ann.search(d.queries, k); };
  auto found = once().indices;
  int reps = 0;
  const auto t0 = Clock::now();
  double secs = 0;
  do {
    once();
    ++reps;
    secs = std::chrono::duration<double>(Clock::now() - t0).count();
  } while (secs < 0.5);
  return {double(reps) * double(d.queries.size(0)) / secs, index::recall_at_k(found, truth(d, allowed, k))};
}
}  // namespace

int main(int argc, char** argv) {
  try {
    int64_t n = 200000, dim = 64, nq = 500;
    int k = 10, threads = 0;
    double target = 0.95;
    std::string recipes = "flat,ivf-flat,hnsw,ivf-pq";
    for (BenchArgs a(argc, argv); a.next();) {
      if (a.is("--n")) n = std::stoll(a.value());
      else if (a.is("--dim")) dim = std::stoll(a.value());
      else if (a.is("--queries")) nq = std::stoll(a.value());
      else if (a.is("-k")) k = std::stoi(a.value());
      else if (a.is("--recipes")) recipes = a.value();
      else if (a.is("--target-recall")) target = std::stod(a.value());
      else if (a.is("--threads")) threads = std::stoi(a.value());
      else throw std::runtime_error("unknown argument " + a.arg());
    }
    apply_thread_budget(resolve_thread_budget(threads));
    const Data d = synthetic(n, dim, nq);
    index::IdSet all(n), quarter(n), ten(n), one(n), block(n), qblock(n);
    auto cl = d.cluster.accessor<int64_t, 1>();
    for (int64_t i = 0; i < n; ++i) {
      all.insert(i);
      if (i % 4 == 0) quarter.insert(i);
      if (i % 10 == 0) ten.insert(i);
      if (i % 100 == 0) one.insert(i);
      if (cl[i] < 100) block.insert(i);
      if (cl[i] < 250) qblock.insert(i);
    }
    std::printf("%lld x %lld vectors around 1000 centres, %lld queries, k=%d, %d threads\n", (long long)n,
                (long long)dim, (long long)nq, k, thread_budget());
    std::printf("%-9s %-14s %10s %8s %12s %8s\n", "recipe", "filter", "queries/s", "recall", "vs unfilt.", "how");
    std::stringstream list(recipes);
    for (std::string name; std::getline(list, name, ',');) {
      index::AnnIndex ann(index::builtin_recipe(name, dim), dim, n);
      ann.train(d.base);
      ann.add(d.base, at::arange(n, at::kLong));
      auto tuned = index::tune(ann, d.queries, truth(d, nullptr, k), k, target);
      const Run plain = measure(ann, d, nullptr, k);
      std::string setting;
      for (auto& [p, v] : tuned.params) setting += p + "=" + std::to_string(int64_t(v)) + " ";
      std::printf("%-9s %-14s %10.0f %8.3f %12s %8s  %s\n", name.c_str(), "none", plain.qps, plain.recall, "1.00x", "-",
                  setting.c_str());
      const std::pair<const char*, const index::IdSet*> filters[] = {
          {"100% spread", &all}, {"25% spread", &quarter}, {"10% spread", &ten}, {"1% spread", &one},
          {"25% clusters", &qblock}, {"10% clusters", &block}};
      for (auto& [label, set] : filters) {
        index::FilterStats st;
        ann.search(d.queries, k, *set, &st);
        const Run r = measure(ann, d, set, k);
        char ratio[32];
        std::snprintf(ratio, sizeof ratio, "%.2fx", r.qps / plain.qps);
        std::printf("%-9s %-14s %10.0f %8.3f %12s %8s\n", name.c_str(), label, r.qps, r.recall, ratio,
                    st.exact ? "exact" : st.in_faiss ? "faiss" : ("fetch" + std::to_string(st.fetched)).c_str());
      }
      std::fflush(stdout);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_filter: %s\n", e.what());
    return 1;
  }
}
