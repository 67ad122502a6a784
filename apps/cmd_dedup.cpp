// `invp dedup`: groups of near-duplicates in an index, or the items of one index that already
// exist in another (search/dedup.h does the work).
#include "common.h"

#include <invp/core/error.h>
#include <invp/core/log.h>
#include <invp/core/memory.h>
#include <invp/data/histogram.h>
#include <invp/search/dedup.h>
#include <invp/search/report.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

namespace invp::app {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kDefaultThreshold = 0.95;
constexpr size_t kMontageItems = 64;  // tiles per group picture: the representative and its closest

struct Args {
  std::string index, threshold = "0.95", montage, against, histogram;
  bool histogram_asked = false;
  int k = 16;
};

CLI::Validator threshold_value() {
  return CLI::Validator(
      [](std::string& v) {
        double x = 0;
        if (v == "auto" || (CLI::detail::lexical_cast(v, x) && x > 0 && x <= 1)) return std::string();
        return std::string("must be 'auto' or a cosine similarity in (0, 1]");
      },
      "");
}

std::string fixed3(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", v);
  return b;
}

std::string label_text(const search::Hit& h) {
  if (!h.category.empty()) return h.category;
  return h.label >= 0 ? std::to_string(h.label) : "-";
}

json item_json(const search::Hit& h) { return {{"id", h.id}, {"path", h.path}, {"score", h.score}}; }

// Where the histogram goes: --histogram FILE; with --threshold auto and --montage, beside the
// group pictures; a bare --histogram, dedup-histogram.png here. Empty: not drawn.
std::string histogram_path(const Args& a, bool auto_threshold) {
  if (a.histogram_asked) return a.histogram.empty() ? "dedup-histogram.png" : a.histogram;
  if (auto_threshold && !a.montage.empty()) return (fs::path(a.montage) / "dedup-histogram.png").string();
  return "";
}

// Settles the threshold (auto: from the nearest-neighbour similarities) and draws their
// histogram when one is wanted.
double settle_threshold(const Args& a, search::IndexHandle& index, const search::DedupOptions& o) {
  const bool automatic = a.threshold == "auto";
  double t = automatic ? kDefaultThreshold : std::stod(a.threshold);
  const std::string png = histogram_path(a, automatic);
  if (!automatic && png.empty()) return t;
  const auto nn = search::nearest_neighbour_similarities(index, o);
  const auto p = search::propose_threshold(nn, kDefaultThreshold);
  if (automatic) {
    t = p.threshold;
    log::info("threshold " + fixed3(t) + " (auto): " + p.reason);
  }
  if (!png.empty() && !p.counts.empty()) {
    const auto parent = fs::path(png).parent_path();
    if (!parent.empty()) fs::create_directories(parent);
    data::write_histogram("nearest-neighbour cosine similarity of " + std::to_string(nn.size()) + " items", p.lo,
                          p.hi, p.counts, t, automatic ? "auto" : "threshold", png);
    log::info("histogram: " + png);
  }
  return t;
}

void write_montages(const std::string& dir, const std::string& prefix, const std::vector<std::vector<search::Hit>>& rows) {
  fs::create_directories(dir);
  char name[64];
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<search::Hit> shown(rows[i].begin(), rows[i].begin() + std::min(rows[i].size(), kMontageItems));
    std::snprintf(name, sizeof name, "%s-%04zu.png", prefix.c_str(), i + 1);
    search::write_hits_montage({}, {}, {shown}, int(std::min<size_t>(8, shown.size())), 96,
                               (fs::path(dir) / name).string());
  }
  if (!rows.empty()) log::info(std::to_string(rows.size()) + " montages in " + dir);
}

void print_stats(const search::DedupStats& s) {
  log::info(s.method + ": " + std::to_string(s.queried) + " items queried, " + std::to_string(s.candidates) +
            " candidate pairs, " + std::to_string(s.pairs) + " at or above the threshold (" + fixed3(s.seconds) + " s)");
}

void run_groups(const Args& a, search::IndexHandle& index, const search::DedupOptions& o) {
  search::DedupStats st;
  const auto groups = search::group_duplicates(index, search::duplicate_pairs(index, o, &st));
  print_stats(st);
  if (!a.montage.empty()) {
    std::vector<std::vector<search::Hit>> rows;
    for (auto& g : groups) rows.push_back(g.items);
    write_montages(a.montage, "group", rows);
  }
  if (globals().json) {
    json gj = json::array();
    for (auto& g : groups) {
      json items = json::array();
      for (auto& h : g.items) items.push_back(item_json(h));
      gj.push_back({{"representative", g.representative}, {"items", items}});
    }
    std::cout << json{{"threshold", o.threshold}, {"groups", gj}}.dump() << "\n";
    return;
  }
  size_t in_groups = 0;
  for (auto& g : groups) in_groups += g.items.size();
  std::printf("threshold %s: %zu groups, %zu items in them\n", fixed3(o.threshold).c_str(), groups.size(), in_groups);
  for (size_t i = 0; i < groups.size(); ++i) {
    std::printf("\ngroup %zu: %zu items, representative %lld\n", i + 1, groups[i].items.size(),
                (long long)groups[i].representative);
    std::printf("%10s  %6s  %-16s  %s\n", "id", "score", "label", "path");
    for (auto& h : groups[i].items)
      std::printf("%10lld  %6.3f  %-16s  %s\n", (long long)h.id, h.score, label_text(h).c_str(), h.path.c_str());
  }
  std::fflush(stdout);
}

void run_against(const Args& a, search::IndexHandle& index, const search::DedupOptions& o) {
  search::IndexHandle other(a.against);
  search::DedupStats st;
  const auto found = search::cross_matches(index, other, search::cross_pairs(index, other, o, &st));
  print_stats(st);
  if (!a.montage.empty()) {
    std::vector<std::vector<search::Hit>> rows;
    for (auto& m : found) {
      rows.push_back({m.item});
      rows.back().insert(rows.back().end(), m.matches.begin(), m.matches.end());
    }
    write_montages(a.montage, "match", rows);
  }
  if (globals().json) {
    json items = json::array();
    for (auto& m : found) {
      json matches = json::array();
      for (auto& h : m.matches) matches.push_back(item_json(h));
      items.push_back({{"id", m.item.id}, {"path", m.item.path}, {"matches", matches}});
    }
    std::cout << json{{"threshold", o.threshold}, {"against", a.against}, {"items", items}}.dump() << "\n";
    return;
  }
  std::printf("threshold %s: %zu items of %s exist in %s\n", fixed3(o.threshold).c_str(), found.size(),
              a.index.c_str(), a.against.c_str());
  for (auto& m : found) {
    std::printf("\n%10lld  %-16s  %s\n", (long long)m.item.id, label_text(m.item).c_str(), m.item.path.c_str());
    for (auto& h : m.matches)
      std::printf("  = %10lld  %6.3f  %s\n", (long long)h.id, h.score, h.path.c_str());
  }
  std::fflush(stdout);
}
}  // namespace

void add_dedup_command(CLI::App& app) {
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand(
      "dedup",
      "Find near-duplicates in an index: groups of items whose cosine similarity reaches the threshold "
      "(connected components: a~b and b~c group a, b, c), each led by the item most similar to the rest. "
      "Pairs come from the index's own search and are re-scored exactly from the stored vectors. With "
      "--against, lists instead which items of the index already exist in another index of the same model.");
  c->add_option("-i,--index", a->index, "Index directory (from invp index build)")->required();
  c->add_option("--threshold", a->threshold,
                "Cosine similarity at or above which two items are duplicates; 'auto' reads it off the "
                "distribution of each item's nearest-neighbour similarity (the valley before the near-1 "
                "mode) and prints what it chose")
      ->capture_default_str()->check(threshold_value());
  c->add_option("--montage", a->montage, "Directory for one PNG per group (biggest first; large groups show "
                                         "the representative and its closest items)");
  c->add_option("--against", a->against,
                "Another index directory (same model): report the items of --index that it already holds");
  auto* h = c->add_option("--histogram", a->histogram,
                          "Draw the nearest-neighbour similarity histogram with the threshold marked into this "
                          "PNG (default with --threshold auto and --montage: beside the group pictures; "
                          "given bare: dedup-histogram.png)")
                ->expected(0, 1);
  c->add_option("-k", a->k, "Hits asked per item first on indexes without range search (HNSW); doubled for "
                            "items that have more above the threshold")
      ->capture_default_str()->check(at_least(1));
  c->callback([a, h] {
    globals().action = [a, h] {
      a->histogram_asked = h->count() > 0;
      keep_large_blocks_mapped();  // the scan frees batch-sized buffers for as long as it runs
      search::IndexHandle index(a->index);
      search::DedupOptions o;
      o.k = a->k;
      o.threshold = settle_threshold(*a, index, o);
      if (a->against.empty()) run_groups(*a, index, o);
      else run_against(*a, index, o);
    };
  });
}
}  // namespace invp::app
