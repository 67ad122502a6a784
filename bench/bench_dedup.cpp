// invp dedup evaluation (issue 26), driven by bench/dedup_eval.sh:
//   bench_dedup make-set SOURCE OUTDIR [--groups G] [--seed S]
//       every image of SOURCE (e.g. /usr/share/datasets/fashion-mnist:test) as OUTDIR/img/o-N.png,
//       plus 1-3 augmented copies of G of them (crop, flip, JPEG re-encoding, brightness /
//       contrast, colour tint; at least two at a time) as OUTDIR/img/c-N-j.png; OUTDIR/list.txt
//       names every file, OUTDIR/truth.csv maps each to its group (the original's index).
//   bench_dedup score OUTDIR INDEX_DIR [--thresholds 0.80,0.85,...] [--hamming 16]
//       precision / recall of the pairs found, per threshold: invp dedup's pairs (library call,
//       one scan at the lowest threshold, exact scores cut at each) and a DCT pHash baseline
//       (imagededup's PHash: 32×32 grey, 2-D DCT, top-left 8×8, bits = coefficient ≥ median
//       of the 63 non-DC ones; pairs within Hamming distance h, all pairs compared) on the
//       same files. Also the pairs implied by the groups (connected components). Markdown.
//   bench_dedup synth N OUT.h5 [--dim 128] [--dup-share 0.01] [--seed S]
//       N synthetic clustered unit vectors with planted near-duplicates (a share of the rows
//       are noisy copies of earlier rows), streamed to an embeddings file.
#include "bench_args.h"

#include <invp/core/error.h>
#include <invp/data/dataset.h>
#include <invp/search/dedup.h>
#include <invp/store/embedding_store.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

using namespace invp;
namespace fs = std::filesystem;

namespace {

cv::Mat to_mat(const data::Image& img) {
  cv::Mat m(img.height, img.width, CV_8UC(img.channels), const_cast<uint8_t*>(img.pixels.data()));
  return img.channels == 3 ? [&] { cv::Mat b; cv::cvtColor(m, b, cv::COLOR_RGB2BGR); return b; }() : m.clone();
}

// One augmented copy: at least two of the transformations, picked at random.
cv::Mat augment(const cv::Mat& src, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  bool use[5];
  int n = 0;
  do {
    n = 0;
    for (bool& b : use) n += (b = u(rng) < 0.5);
  } while (n < 2);
  cv::Mat m = src.clone();
  if (use[0]) {  // crop keeping 80-95 % of each side, resized back
    const double keep = 0.80 + 0.15 * u(rng);
    const int w = std::max(1, int(m.cols * keep)), h = std::max(1, int(m.rows * keep));
    const int x = int(u(rng) * (m.cols - w)), y = int(u(rng) * (m.rows - h));
    cv::resize(m(cv::Rect(x, y, w, h)).clone(), m, src.size(), 0, 0, cv::INTER_LINEAR);
  }
  if (use[1]) cv::flip(m, m, 1);
  if (use[2]) m.convertTo(m, -1, 0.7 + 0.6 * u(rng), -30 + 60 * u(rng));  // contrast, brightness
  if (use[3]) {  // colour tint (the copy becomes a colour image)
    if (m.channels() == 1) cv::cvtColor(m, m, cv::COLOR_GRAY2BGR);
    std::vector<cv::Mat> ch;
    cv::split(m, ch);
    for (auto& c : ch) c.convertTo(c, -1, 0.75 + 0.5 * u(rng), 0);
    cv::merge(ch, m);
  }
  if (use[4]) {  // JPEG re-encoding at quality 30-70
    std::vector<uint8_t> buf;
    cv::imencode(".jpg", m, buf, {cv::IMWRITE_JPEG_QUALITY, 30 + int(40 * u(rng))});
    m = cv::imdecode(buf, cv::IMREAD_UNCHANGED);
  }
  return m;
}

int make_set(const std::string& source, const std::string& out, int groups, uint64_t seed) {
  auto ds = data::open_dataset(source);
  fs::create_directories(fs::path(out) / "img");
  std::ofstream list(fs::path(out) / "list.txt"), truth(fs::path(out) / "truth.csv");
  truth << "path,group\n";
  std::mt19937_64 rng(seed);
  std::vector<size_t> order(ds->size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<bool> dup(ds->size());
  for (int g = 0; g < groups && size_t(g) < order.size(); ++g) dup[order[size_t(g)]] = true;
  size_t copies = 0;
  for (size_t i = 0; i < ds->size(); ++i) {
    const cv::Mat m = to_mat(ds->get(i).image);
    auto write = [&](const std::string& name, const cv::Mat& img) {
      const auto p = fs::absolute(fs::path(out) / "img" / name).string();
      cv::imwrite(p, img);
      list << p << "\n";
      truth << p << "," << i << "\n";
    };
    write("o-" + std::to_string(i) + ".png", m);
    if (!dup[i]) continue;
    const int c = 1 + int(rng() % 3);
    for (int j = 0; j < c; ++j, ++copies) write("c-" + std::to_string(i) + "-" + std::to_string(j) + ".png", augment(m, rng));
  }
  std::printf("%zu originals, %d of them with %zu augmented copies in all: %s\n", ds->size(), groups, copies,
              out.c_str());
  return 0;
}

// imagededup's PHash of one file.
uint64_t phash(const std::string& path) {
  cv::Mat g = cv::imread(path, cv::IMREAD_GRAYSCALE);
  if (g.empty()) throw Error(path, "cannot read");
  cv::Mat small, f, d;
  cv::resize(g, small, {32, 32}, 0, 0, cv::INTER_LANCZOS4);
  small.convertTo(f, CV_32F);
  cv::dct(f, d);
  // scipy's unnormalised DCT-II (imagededup's) weighs row and column 0 by sqrt(2) more than
  // OpenCV's orthonormal one; the comparisons with the median depend on it.
  d.row(0) *= std::sqrt(2.f);
  d.col(0) *= std::sqrt(2.f);
  std::vector<float> c;
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x) c.push_back(d.at<float>(y, x));
  std::vector<float> rest(c.begin() + 1, c.end());  // 63 values: the median is the 32nd
  std::nth_element(rest.begin(), rest.begin() + 31, rest.end());
  const float med = rest[31];
  uint64_t h = 0;
  for (int i = 0; i < 64; ++i) h |= uint64_t(c[size_t(i)] >= med) << i;
  return h;
}

struct Truth {
  std::map<std::string, int64_t> group;  // path → group
  std::map<int64_t, int64_t> sizes;      // group → items
  int64_t pairs() const {
    int64_t n = 0;
    for (auto& [g, s] : sizes) n += s * (s - 1) / 2;
    return n;
  }
};
Truth read_truth(const std::string& dir) {
  Truth t;
  std::ifstream f(fs::path(dir) / "truth.csv");
  std::string line;
  std::getline(f, line);
  while (std::getline(f, line)) {
    const auto c = line.rfind(',');
    const int64_t g = std::stoll(line.substr(c + 1));
    t.group[line.substr(0, c)] = g;
    ++t.sizes[g];
  }
  return t;
}

struct PR {
  int64_t found = 0, correct = 0;
};
std::string pr_cells(const PR& p, int64_t truth_pairs) {
  char b[96];
  std::snprintf(b, sizeof b, "%lld | %.3f | %.3f", (long long)p.found, p.found ? double(p.correct) / double(p.found) : 1.0,
                double(p.correct) / double(truth_pairs));
  return b;
}

// Pairs implied by grouping: all pairs within each connected component of `pairs`.
PR component_pairs(const std::vector<std::pair<int64_t, int64_t>>& pairs, const std::vector<int64_t>& group_of) {
  std::vector<int64_t> parent(group_of.size());
  for (size_t i = 0; i < parent.size(); ++i) parent[i] = int64_t(i);
  auto find = [&](int64_t x) {
    while (parent[size_t(x)] != x) x = parent[size_t(x)] = parent[size_t(parent[size_t(x)])];
    return x;
  };
  for (auto& [a, b] : pairs) parent[size_t(find(a))] = find(b);
  std::map<int64_t, int64_t> comp;
  std::map<std::pair<int64_t, int64_t>, int64_t> both;
  for (size_t i = 0; i < group_of.size(); ++i) ++comp[find(int64_t(i))], ++both[{find(int64_t(i)), group_of[i]}];
  PR r;
  for (auto& [c, s] : comp) r.found += s * (s - 1) / 2;
  for (auto& [k, s] : both) r.correct += s * (s - 1) / 2;
  return r;
}

int score(const std::string& set, const std::string& index_dir, std::vector<double> thresholds, int max_h) {
  const Truth truth = read_truth(set);
  search::IndexHandle h(index_dir);
  const auto& ids = h.ids();
  std::vector<int64_t> group_of(ids.size());
  std::map<int64_t, int64_t> row_of_id;
  for (size_t r = 0; r < ids.size(); ++r) {
    const auto path = h.describe(ids[r], 0).path;
    group_of[r] = truth.group.at(path);
    row_of_id[ids[r]] = int64_t(r);
  }
  search::DedupOptions o;
  o.threshold = *std::min_element(thresholds.begin(), thresholds.end());
  search::DedupStats st;
  const auto pairs = search::duplicate_pairs(h, o, &st);
  std::printf("%lld items, %lld true pairs; dedup scan at %.2f: %s, %.1f s\n\n", (long long)ids.size(),
              (long long)truth.pairs(), o.threshold, st.method.c_str(), st.seconds);
  std::printf("| invp dedup threshold | pairs found | precision | recall | grouped pairs | precision | recall |\n|---|---|---|---|---|---|---|\n");
  for (double t : thresholds) {
    PR p;
    std::vector<std::pair<int64_t, int64_t>> kept;
    for (auto& x : pairs) {
      if (x.score < t) continue;
      const int64_t a = row_of_id.at(x.a), b = row_of_id.at(x.b);
      ++p.found, p.correct += group_of[size_t(a)] == group_of[size_t(b)];
      kept.push_back({a, b});
    }
    std::printf("| %g | %s | %s |\n", t, pr_cells(p, truth.pairs()).c_str(),
                pr_cells(component_pairs(kept, group_of), truth.pairs()).c_str());
  }
  // pHash of the same files, all pairs.
  std::vector<uint64_t> hashes;
  for (size_t r = 0; r < ids.size(); ++r) hashes.push_back(phash(h.describe(ids[r], 0).path));
  std::vector<std::vector<std::pair<int64_t, int64_t>>> by_h(size_t(max_h + 1));
  for (size_t i = 0; i < hashes.size(); ++i)
    for (size_t j = i + 1; j < hashes.size(); ++j) {
      const int d = __builtin_popcountll(hashes[i] ^ hashes[j]);
      if (d <= max_h) by_h[size_t(d)].push_back({int64_t(i), int64_t(j)});
    }
  std::printf("\n| pHash Hamming ≤ h | pairs found | precision | recall | grouped pairs | precision | recall |\n|---|---|---|---|---|---|---|\n");
  std::vector<std::pair<int64_t, int64_t>> kept;
  PR p;
  for (int d = 0; d <= max_h; ++d) {
    for (auto& [a, b] : by_h[size_t(d)]) ++p.found, p.correct += group_of[size_t(a)] == group_of[size_t(b)], kept.push_back({a, b});
    std::printf("| %d | %s | %s |\n", d, pr_cells(p, truth.pairs()).c_str(), pr_cells(component_pairs(kept, group_of), truth.pairs()).c_str());
  }
  return 0;
}

// Clustered unit vectors; a share of rows are copies (small noise) of an earlier row.
int synth(int64_t n, const std::string& out, int64_t dim, double dup_share, uint64_t seed) {
  torch::manual_seed(int64_t(seed));
  auto centers = torch::randn({1000, dim});
  auto basis = torch::randn({16, dim}) * 0.3;
  store::StoreMeta m;
  m.dim = dim;
  m.model_hash = "synthetic-dedup";
  m.source = "synthetic";
  store::EmbeddingWriter w(out, m, 65536);
  const int64_t B = 65536;
  int64_t planted = 0;
  std::mt19937_64 rng(seed);
  for (int64_t s = 0; s < n; s += B) {
    const int64_t c = std::min(B, n - s);
    auto x = centers.index_select(0, torch::randint(0, 1000, {c}, torch::kLong)) +
             torch::matmul(torch::randn({c, 16}), basis) + 0.05 * torch::randn({c, dim});
    for (int64_t i = 1; i < c; ++i)
      if (std::uniform_real_distribution<double>(0, 1)(rng) < dup_share)
        x[i].copy_(x[int64_t(rng() % uint64_t(i))] + 0.15 * torch::randn({dim})), ++planted;
    store::Rows r;
    r.embeddings = (x / x.norm(2, 1, true)).contiguous();
    for (int64_t i = 0; i < c; ++i) r.ids.push_back(s + i), r.paths.push_back("synthetic#" + std::to_string(s + i)), r.labels.push_back(-1);
    w.append(r);
  }
  w.finish();
  std::printf("%lld vectors (dim %lld), %lld planted near-copies: %s\n", (long long)n, (long long)dim, (long long)planted, out.c_str());
  return 0;
}

std::vector<double> parse_list(const std::string& s) {
  std::vector<double> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) v.push_back(std::stod(x));
  return v;
}
}  // namespace

int main(int argc, char** argv) try {
  std::vector<std::string> pos;
  int groups = 2000, max_h = 16;
  int64_t dim = 128;
  double dup_share = 0.01;
  uint64_t seed = 1;
  std::vector<double> thresholds{0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99};
  for (BenchArgs a(argc, argv); a.next();) {
    if (a.is("--groups")) groups = std::stoi(a.value());
    else if (a.is("--seed")) seed = std::stoull(a.value());
    else if (a.is("--thresholds")) thresholds = parse_list(a.value());
    else if (a.is("--hamming")) max_h = std::stoi(a.value());
    else if (a.is("--dim")) dim = std::stoll(a.value());
    else if (a.is("--dup-share")) dup_share = std::stod(a.value());
    else pos.push_back(a.arg());
  }
  if (pos.size() == 3 && pos[0] == "make-set") return make_set(pos[1], pos[2], groups, seed);
  if (pos.size() == 3 && pos[0] == "score") return score(pos[1], pos[2], thresholds, max_h);
  if (pos.size() == 3 && pos[0] == "synth") return synth(std::stoll(pos[1]), pos[2], dim, dup_share, seed);
  std::fprintf(stderr, "usage: bench_dedup make-set SOURCE OUTDIR | score OUTDIR INDEX_DIR | synth N OUT.h5 (see the file)\n");
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_dedup: %s\n", e.what());
  return 1;
}
