// Recall measurement and search-parameter tuning.
#include <invp/core/error.h>
#include <invp/index/ann_detail.h>
#include <invp/index/ann_index.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace invp::index {
namespace {

void check_ids(const at::Tensor& t, const char* what) {
  if (!t.defined() || t.dim() != 2 || t.scalar_type() != at::kLong || !t.device().is_cpu())
    throw Error("", std::string(what) + " must be a 2-D CPU int64 tensor (queries×k)");
}

double queries_per_second(const SearchIds& search, const at::Tensor& queries, int k) {
  using clock = std::chrono::steady_clock;
  constexpr double kMinSeconds = 0.05;  // one small batch alone is too noisy to time
  const auto start = clock::now();
  int64_t done = 0;
  double elapsed = 0;
  do {
    search(queries, k);
    done += queries.size(0);
    elapsed = std::chrono::duration<double>(clock::now() - start).count();
  } while (elapsed < kMinSeconds && done < 1000 * std::max<int64_t>(queries.size(0), 1));
  return elapsed > 0 ? double(done) / elapsed : 0;
}

}  // namespace

double recall_at_k(const at::Tensor& found, const at::Tensor& truth) {
  check_ids(found, "found ids");
  check_ids(truth, "true ids");
  if (found.size(0) != truth.size(0))
    throw Error("", "recall: found has " + std::to_string(found.size(0)) + " rows, truth " +
                        std::to_string(truth.size(0)));
  const int64_t q = truth.size(0);
  if (q == 0) return 1.0;
  const auto f = found.contiguous(), t = truth.contiguous();
  const int64_t kf = f.size(1), kt = t.size(1);
  const int64_t* fp = f.data_ptr<int64_t>();
  const int64_t* tp = t.data_ptr<int64_t>();
  double sum = 0;
  std::vector<int64_t> want, got;
  for (int64_t i = 0; i < q; ++i) {
    want.assign(tp + i * kt, tp + (i + 1) * kt);
    want.erase(std::remove(want.begin(), want.end(), int64_t(-1)), want.end());
    got.assign(fp + i * kf, fp + (i + 1) * kf);
    std::sort(want.begin(), want.end());
    want.erase(std::unique(want.begin(), want.end()), want.end());
    std::sort(got.begin(), got.end());
    got.erase(std::unique(got.begin(), got.end()), got.end());
    if (want.empty()) {
      sum += 1;  // nothing to find
      continue;
    }
    std::vector<int64_t> both;
    std::set_intersection(want.begin(), want.end(), got.begin(), got.end(), std::back_inserter(both));
    sum += double(both.size()) / double(want.size());
  }
  return sum / double(q);
}

TuneResult tune(AnnIndex& index, const at::Tensor& queries, const at::Tensor& truth, int k,
                double target_recall, const SearchIds& given) {
  detail::check_matrix(queries, index.dim(), "tuning queries");
  check_ids(truth, "true ids");
  if (k < 1 || truth.size(1) != k || truth.size(0) != queries.size(0))
    throw Error("", "tune: truth must be queries×k with k ≥ 1");
  if (!(target_recall > 0 && target_recall <= 1)) throw Error("", "tune: target recall must be in (0, 1]");
  const SearchIds search =
      given ? given : SearchIds([&index](const at::Tensor& q, int kk) { return index.search(q, kk).indices; });
  TuneResult out;
  const auto names = index.tunable_parameters();
  if (names.empty()) {  // exact
    out.recall = 1.0;
    out.queries_per_second = queries_per_second(search, queries, k);
    return out;
  }
  const std::string& name = names[0];
  const std::vector<double> sweep = index.tuning_sweep();
  std::vector<std::pair<double, double>> tried;  // (value, recall)
  for (double v : sweep) {
    index.set_search_params({{name, v}});
    const double r = recall_at_k(search(queries, k), truth);
    tried.push_back({v, r});
    if (r >= target_recall) break;
    const size_t n = tried.size();
    if (n >= 3 && r - tried[n - 3].second < 0.002) break;  // plateau (e.g. PQ's own error)
  }
  auto chosen = tried.back();
  if (chosen.second < target_recall) {
    double best = 0;
    for (auto& t : tried) best = std::max(best, t.second);
    for (auto& t : tried) {
      if (t.second >= best - 0.001) {
        chosen = t;
        break;
      }
    }
  }
  index.set_search_params({{name, chosen.first}});
  out.params = {{name, chosen.first}};
  out.recall = chosen.second;
  out.queries_per_second = queries_per_second(search, queries, k);
  return out;
}

}  // namespace invp::index
