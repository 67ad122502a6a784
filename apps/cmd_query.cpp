// `invp query` and `invp inspect`.
#include "common.h"

#include <invp/core/error.h>
#include <invp/core/log.h>
#include <invp/core/memory.h>
#include <invp/data/dataset.h>
#include <invp/data/decode.h>
#include <invp/data/fetch.h>
#include <invp/data/montage.h>
#include <invp/search/index_dir.h>
#include <invp/search/index_set.h>
#include <invp/search/inspect.h>
#include <invp/search/query_service.h>
#include <invp/search/report.h>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

namespace invp::app {
namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }
using search::hits_json;

// Before opening an index in a one-shot command: make the memory the FAISS file and the model
// will be read into resident in one go (see reserve_resident_heap). Any problem
// with the directory is left for IndexHandle to report.
void prepare_heap_for(const std::string& dir) {
  namespace fs = std::filesystem;
  int64_t bytes = 0;
  try {
    // The FAISS file is read whole; the metadata file is only opened (rows are read on demand).
    for (const auto& [name, rec] : search::read_index_info(dir).files)
      if (name.rfind("index-", 0) == 0) bytes += std::max<int64_t>(0, rec.bytes);
  } catch (const std::exception&) {
    return;
  }
  std::error_code ec;
  const auto model = fs::file_size(fs::path(dir) / "model.pt", ec);
  if (!ec) bytes += int64_t(model);
  reserve_resident_heap(size_t(bytes) + size_t(bytes) / 4 + (size_t(16) << 20));
}

std::string label_text(const search::Hit& h) {
  if (!h.category.empty()) return h.category;
  return h.label >= 0 ? std::to_string(h.label) : "-";
}

// The queries of a command line: image files (or '-' = a list on stdin), or --id N.
std::vector<search::QueryRequest> command_line_requests(const std::vector<std::string>& inputs,
                                                        const std::vector<int64_t>& ids, int k,
                                                        const std::string& filter) {
  std::vector<search::QueryRequest> out;
  for (int64_t id : ids) {
    search::QueryRequest r;
    r.name = "id " + std::to_string(id);
    r.id = id;
    r.k = k;
    r.filter = filter;
    out.push_back(std::move(r));
  }
  if (!ids.empty()) return out;
  if (inputs.empty()) throw CLI::ValidationError("query", "give IMAGE..., '-' (list on stdin) or --id N");
  std::vector<std::string> paths;
  for (const auto& in : inputs) {
    if (in != "-") {
      paths.push_back(in);
      continue;
    }
    auto list = search::read_path_list(std::cin);
    paths.insert(paths.end(), list.begin(), list.end());
  }
  if (paths.empty()) throw Error("-", "no query paths on standard input", "one image path a line");
  for (const auto& p : paths) {
    search::QueryRequest r;
    r.name = r.path = p;
    r.k = k;
    r.filter = filter;
    out.push_back(std::move(r));
  }
  return out;
}

struct QueryArgs {
  std::vector<std::string> indexes, images;
  std::string model, montage, device = "cpu", filter;
  std::vector<int64_t> ids;
  int k = 10;
  bool serve = false;
};

// What a one-shot query answered, for printing.
struct Answers {
  std::vector<std::string> names, notes;
  std::vector<std::vector<search::Hit>> hits;
  double load_ms = 0, embed_ms = 0, search_ms = 0;
};

// One index: through the query service (batched embedding, the hit cache, montages).
Answers answer_one(const QueryArgs& a, search::QueryService& svc) {
  Answers out;
  search::BatchTimings bt;
  auto results = svc.query_many(command_line_requests(a.images, a.ids, a.k, a.filter), !a.montage.empty(), &bt);
  std::vector<data::Image> firsts;
  for (auto& r : results) {
    if (r.fault != search::Fault::none) throw Error("", r.error);
    out.names.push_back(r.name), out.notes.push_back(r.note), out.hits.push_back(r.hits);
    firsts.push_back(std::move(r.image));
  }
  out.embed_ms = bt.embed_ms, out.search_ms = bt.search_ms;
  if (!a.montage.empty()) {
    for (size_t i = 0; i < a.ids.size(); ++i) firsts[i] = svc.item_image(a.ids[i]);
    search::write_hits_montage(firsts, {}, out.hits, a.k + 1, 96, a.montage);
  }
  return out;
}

// Several directories searched as one collection (search::IndexSet: per-directory top k
// merged by score; one model, disjoint ids).
Answers answer_set(const QueryArgs& a) {
  Answers out;
  search::IndexSet set(a.indexes, a.model, a.device);
  const auto filter = search::Filter::parse(a.filter);
  auto t0 = Clock::now();
  std::vector<torch::Tensor> rows;
  std::vector<int64_t> exclude;
  for (const auto& r : command_line_requests(a.images, a.ids, a.k, a.filter)) {
    out.names.push_back(r.name);
    exclude.push_back(r.id);
    rows.push_back(r.id >= 0 ? set.vectors({r.id})[0]
                             : set.embedder().embed_images({data::read_image_file(r.path, set.embedder().channels())})[0]);
  }
  auto t1 = Clock::now();
  out.hits = set.search(torch::stack(rows), a.k, exclude, filter.empty() ? nullptr : &filter);
  out.embed_ms = std::chrono::duration<double, std::milli>(t1 - t0).count(), out.search_ms = ms_since(t1);
  out.notes.resize(out.hits.size());
  for (size_t i = 0; i < out.hits.size(); ++i)
    if (!filter.empty() && int(out.hits[i].size()) < a.k) out.notes[i] = "fewer than k items match the filter";
  return out;
}

void print_answers(const QueryArgs& a, const Answers& r, Clock::time_point t0) {
  for (size_t i = 0; i < r.hits.size(); ++i)
    if (!r.notes[i].empty()) log::info(r.names[i] + ": " + r.notes[i]);
  if (globals().json) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < r.hits.size(); ++i) {
      out.push_back({{"query", r.names[i]}, {"hits", hits_json(r.hits[i])}});
      if (!r.notes[i].empty()) out.back()["note"] = r.notes[i];
    }
    nlohmann::json j{{"index", a.indexes.size() == 1 ? nlohmann::json(a.indexes[0]) : nlohmann::json(a.indexes)},
                     {"k", a.k}, {"results", out},
                     {"timings_ms", {{"load", r.load_ms}, {"embed", r.embed_ms}, {"search", r.search_ms},
                                     {"total", ms_since(t0)}}}};
    if (!a.montage.empty()) j["montage"] = a.montage;
    if (!a.filter.empty()) j["filter"] = a.filter;
    std::cout << j.dump() << "\n";
    return;
  }
  for (size_t i = 0; i < r.hits.size(); ++i) {
    std::cout << "query " << r.names[i] << "\n";
    std::printf("%4s  %6s  %-16s  %s\n", "rank", "score", "label", "path");
    for (size_t n = 0; n < r.hits[i].size(); ++n) {
      const auto& x = r.hits[i][n];
      std::printf("%4zu  %6.3f  %-16s  %s\n", n + 1, x.score, label_text(x).c_str(), x.path.c_str());
    }
    if (i + 1 < r.hits.size()) std::cout << "\n";
  }
  std::fflush(stdout);
  if (!a.montage.empty()) log::info("montage: " + a.montage);
}

void run_query(const QueryArgs& a) {
  auto t0 = Clock::now();
  search::Filter::parse(a.filter);  // a malformed filter fails before any work
  if (a.indexes.size() > 1) {
    if (a.serve || !a.montage.empty())
      throw CLI::ValidationError("query", "--serve and --montage take one --index");
    return print_answers(a, answer_set(a), t0);
  }
  if (a.serve)
    keep_large_blocks_mapped();  // long-running: freed blocks go back, none is kept resident
  else
    prepare_heap_for(a.indexes[0]);
  search::ServiceOptions so;
  so.model_override = a.model;
  so.device = a.device;
  so.max_k = std::max(so.max_k, a.k);  // the operator may ask for any k
  search::QueryService svc(a.indexes[0], so);
  if (a.serve) {
    auto rep = search::serve_lines(svc, STDIN_FILENO, stdout, a.k, a.filter);
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.1f", rep.seconds);
    return log::info("served " + std::to_string(rep.answered) + " queries (" + std::to_string(rep.failed) +
                     " failed) in " + secs + " s");
  }
  const double load_ms = ms_since(t0);
  auto r = answer_one(a, svc);
  r.load_ms = load_ms;
  print_answers(a, r, t0);
}

void add_query(CLI::App& app) {
  auto a = std::make_shared<QueryArgs>();
  auto* c = app.add_subcommand(
      "query",
      "Find the most similar images in an index: prints rank, cosine score, label and path for "
      "each query (IMAGE files, '-' for a list of paths on stdin, or --id N for an indexed item).");
  c->add_option("-i,--index", a->indexes,
                "Index directory (from invp index build); repeat it to search several directories made "
                "with one model and disjoint ids as one collection")
      ->required()->allow_extra_args(false);
  c->add_option("images", a->images, "Query images, or '-' to read paths from stdin");
  c->add_option("--id", a->ids, "Query with indexed item(s) N (the item itself is left out)");
  c->add_option("-k", a->k, "Hits per query")->capture_default_str()->check(at_least(1));
  c->add_option("--model", a->model, "Model override (must be the index's model)");
  c->add_option("--montage", a->montage, "Also draw each query and its hits into this PNG");
  c->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  c->add_option("--filter", a->filter,
                "Only return items whose metadata match: terms field=value or field!=value joined by ',' "
                "(AND), alternatives by '|' (OR); fields category (a name), label and id (numbers or "
                "ranges lo..hi) and path (a shell pattern, matched against the path or any tail after a "
                "'/'). Example: category=Coat|Shirt,id=0..9999,path=2024/*")
      ->check(filter_expression());
  auto* serve = c->add_flag(
      "--serve", a->serve,
      "Stay resident for scripts: read queries from stdin, one a line (an image path, or id:N "
      "for an indexed item), and answer each with one JSON line on stdout as soon as it is "
      "read; a bad line gets {\"query\",\"error\"} and the loop goes on until end of input. "
      "Start-up is paid once.");
  serve->excludes(c->get_option("images"))->excludes(c->get_option("--id"))->excludes(c->get_option("--montage"));
  c->callback([a] { globals().action = [a] { run_query(*a); }; });
}

void add_inspect(CLI::App& app) {
  struct Args {
    std::string index, model, image, propagation, out = "inspect";
    bool categories = false;
    int clusters = 0, k = 0, hops = 3;
    int64_t max_queries = 20000;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand(
      "inspect",
      "Look inside an index. IMAGE: its nearest categories (weighted vote of the top-K "
      "neighbours and cosine to category centroids). --categories: per-category neighbour "
      "purity and the most-confused pairs (table + PNG chart). --clusters N: k-means "
      "pseudo-categories of an unlabelled collection, a montage per cluster. --propagation "
      "IMAGE: the hop-by-hop set reached over the kNN graph, as a montage.");
  c->add_option("-i,--index", a->index, "Index directory")->required();
  c->add_option("image", a->image, "Image whose nearest categories to show");
  c->add_flag("--categories", a->categories, "Per-category purity and confused pairs");
  c->add_option("--clusters", a->clusters, "k-means clusters for an unlabelled collection");
  c->add_option("--propagation", a->propagation, "Image whose propagated set to draw");
  c->add_option("-k", a->k, "Neighbours (default: 50 for IMAGE, 10 for --categories, 4 for --propagation)");
  c->add_option("--hops", a->hops, "Propagation depth l")->capture_default_str();
  c->add_option("--max-queries", a->max_queries, "Items queried for --categories (a random sample beyond)")->capture_default_str();
  c->add_option("--out", a->out, "Directory for PNG charts and montages")->capture_default_str();
  c->add_option("--model", a->model, "Model override (must be the index's model)");
  c->callback([a] {
    globals().action = [a] {
      int modes = !a->image.empty() + a->categories + (a->clusters > 0) + !a->propagation.empty();
      if (modes != 1)
        throw CLI::ValidationError("inspect", "give exactly one of IMAGE, --categories, --clusters N, --propagation IMAGE");
      prepare_heap_for(a->index);
      search::ServiceOptions so;
      so.model_override = a->model;
      so.max_k = std::max(so.max_k, a->k);
      search::QueryService svc(a->index, so);
      auto file_request = [](const std::string& path) {
        search::QueryRequest r;
        r.name = r.path = path;
        return r;
      };
      namespace fs = std::filesystem;
      if (!a->image.empty()) {
        auto cats = svc.categories(file_request(a->image), a->k > 0 ? a->k : 50);
        if (globals().json) {
          nlohmann::json j = nlohmann::json::array();
          for (auto& s : cats) j.push_back({{"label", s.label}, {"category", s.name}, {"vote", s.vote}, {"centroid_cosine", s.centroid}});
          std::cout << nlohmann::json{{"image", a->image}, {"categories", j}}.dump() << "\n";
        } else {
          std::cout << "nearest categories of " << a->image << "\n";
          std::printf("%-16s  %6s  %8s\n", "category", "vote", "centroid");
          for (size_t i = 0; i < cats.size() && i < 5; ++i)
            std::printf("%-16s  %5.1f%%  %8.3f\n", cats[i].name.c_str(), 100 * cats[i].vote, cats[i].centroid);
        }
      } else if (a->categories) {
        search::CategoryReport r;
        svc.with_index([&](search::IndexHandle& h) {
          r = search::category_report(h, a->k > 0 ? a->k : 10, a->max_queries, globals().seed);
        });
        fs::create_directories(a->out);
        auto chart = (fs::path(a->out) / "category-purity.png").string();
        std::vector<std::string> names;
        std::vector<double> vals;
        for (auto& c2 : r.categories) names.push_back(c2.name), vals.push_back(c2.purity);
        data::write_bar_chart("neighbour purity @" + std::to_string(r.k) + " (" + std::to_string(r.queried) + " items)",
                              names, vals, chart);
        if (globals().json) {
          nlohmann::json cj = nlohmann::json::array(), pj = nlohmann::json::array();
          for (auto& x : r.categories) cj.push_back({{"label", x.label}, {"category", x.name}, {"items", x.items}, {"purity", x.purity}});
          for (auto& p : r.confused) pj.push_back({{"a", p.name_a}, {"b", p.name_b}, {"share", p.share}});
          std::cout << nlohmann::json{{"k", r.k}, {"queried", r.queried}, {"purity", r.purity},
                                      {"categories", cj}, {"confused", pj}, {"chart", chart}}.dump() << "\n";
        } else {
          std::printf("neighbour purity @%d over %lld items: %.1f%%\n", r.k, (long long)r.queried, 100 * r.purity);
          std::printf("%-16s  %7s  %7s\n", "category", "items", "purity");
          for (auto& x : r.categories) std::printf("%-16s  %7lld  %6.1f%%\n", x.name.c_str(), (long long)x.items, 100 * x.purity);
          std::printf("\nmost confused pairs (share of neighbour slots)\n");
          for (auto& p : r.confused) std::printf("%-16s <-> %-16s  %5.2f%%\n", p.name_a.c_str(), p.name_b.c_str(), 100 * p.share);
          std::fflush(stdout);
          log::info("chart: " + chart);
        }
      } else if (a->clusters > 0) {
        std::vector<search::Cluster> cl;
        svc.with_index([&](search::IndexHandle& h) {
          cl = search::cluster_collection(h, a->clusters, 8, 100000, globals().seed);
        });
        fs::create_directories(a->out);
        auto png = (fs::path(a->out) / "clusters.png").string();
        std::vector<std::vector<search::Hit>> rows;
        std::vector<std::string> caps;
        for (size_t i = 0; i < cl.size(); ++i) rows.push_back(cl[i].closest);
        search::write_hits_montage({}, {}, rows, 8, 96, png);
        if (globals().json) {
          nlohmann::json j = nlohmann::json::array();
          for (size_t i = 0; i < cl.size(); ++i)
            j.push_back({{"cluster", i}, {"size", cl[i].size}, {"closest", hits_json(cl[i].closest)}});
          std::cout << nlohmann::json{{"clusters", j}, {"montage", png}}.dump() << "\n";
        } else {
          std::printf("%7s  %7s  %s\n", "cluster", "size", "closest item");
          for (size_t i = 0; i < cl.size(); ++i)
            std::printf("%7zu  %7lld  %s\n", i, (long long)cl[i].size,
                        cl[i].closest.empty() ? "-" : cl[i].closest[0].path.c_str());
          std::fflush(stdout);
          log::info("montage (one row per cluster): " + png);
        }
      } else {
        data::Image img;
        auto v = svc.propagation(file_request(a->propagation), a->k > 0 ? a->k : 4, a->hops, &img);
        fs::create_directories(a->out);
        auto png = (fs::path(a->out) / "propagation.png").string();
        std::vector<std::vector<search::Hit>> rows;
        std::vector<data::Image> firsts;
        std::vector<std::string> caps;
        for (size_t i = 0; i < v.hops.size(); ++i) {
          rows.push_back(v.hops[i]);
          firsts.push_back(i == 0 ? img : data::Image{});
          caps.push_back(i == 0 ? "anchor" : "hop " + std::to_string(i + 1));
        }
        search::write_hits_montage(firsts, caps, rows, 16, 96, png);
        if (globals().json) {
          nlohmann::json hj = nlohmann::json::array();
          for (auto& hop : v.hops) hj.push_back(hits_json(hop));
          std::cout << nlohmann::json{{"image", a->propagation}, {"anchor_id", v.anchor.id}, {"hops", hj}, {"montage", png}}.dump() << "\n";
        } else {
          std::cout << "propagation from " << a->propagation
                    << (v.anchor.id >= 0 ? " (indexed as id " + std::to_string(v.anchor.id) + ")" : " (not in the index)") << "\n";
          for (size_t i = 0; i < v.hops.size(); ++i) {
            int same = 0;
            for (auto& x : v.hops[i]) same += v.anchor.label >= 0 && x.label == v.anchor.label;
            std::cout << "hop " << i + 1 << ": " << v.hops[i].size() << " items";
            if (v.anchor.label >= 0) std::cout << ", " << same << " with the anchor's label";
            std::cout << "\n";
          }
          std::cout.flush();
          log::info("montage (one row group per hop): " + png);
        }
      }
    };
  });
}
}  // namespace

void add_query_commands(CLI::App& app) {
  add_query(app);
  add_inspect(app);
}
}  // namespace invp::app
