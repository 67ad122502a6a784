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
#include <invp/search/report.h>

#include <nlohmann/json.hpp>

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>

namespace invp::app {
namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// A ranked list of hits as JSON: rank (from 1), id, score, label, path, category if known.
nlohmann::json hits_json(const std::vector<search::Hit>& hits) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t r = 0; r < hits.size(); ++r) {
    const auto& h = hits[r];
    nlohmann::json j{{"rank", int(r + 1)}, {"id", h.id}, {"score", h.score}, {"label", h.label}, {"path", h.path}};
    if (!h.category.empty()) j["category"] = h.category;
    out.push_back(std::move(j));
  }
  return out;
}

// Images decoded and embedded at a time, by the list mode and by --serve.
constexpr size_t kQueryBatch = 64;

// A stdin line as a query: without a trailing CR (CRLF lists).
void strip_cr(std::string& line) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
}

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
struct Queries {
  std::vector<std::string> names;   // shown in output
  std::vector<int64_t> exclude;     // the query's own id (−1 for images)
  std::vector<data::Image> images;  // originals, for montages (empty for --id)
  torch::Tensor vectors;
};

Queries read_queries(search::IndexSet& h, const std::vector<std::string>& inputs,
                     const std::vector<int64_t>& ids, bool keep_images) {
  Queries q;
  if (!ids.empty()) {
    for (int64_t id : ids) {
      q.names.push_back("id " + std::to_string(id));
      q.exclude.push_back(id);
    }
    q.vectors = h.vectors(ids);
    return q;
  }
  if (inputs.empty()) throw CLI::ValidationError("query", "give IMAGE..., '-' (list on stdin) or --id N");
  std::vector<std::string> paths;
  for (const auto& in : inputs) {
    if (in == "-") {
      std::string line;
      while (std::getline(std::cin, line)) {
        strip_cr(line);
        if (!line.empty()) paths.push_back(line);
      }
    } else {
      paths.push_back(in);
    }
  }
  if (paths.empty()) throw Error("-", "no query paths on standard input", "one image path a line");
  // Decoded and embedded in batches, so a long list never holds all its images at once; the
  // originals are kept only for a montage.
  auto& e = h.embedder();
  std::vector<torch::Tensor> parts;
  std::vector<data::Image> batch;
  for (size_t i = 0; i < paths.size(); ++i) {
    batch.push_back(data::read_image_file(paths[i], 0));
    q.names.push_back(paths[i]);
    q.exclude.push_back(-1);
    if (batch.size() == kQueryBatch || i + 1 == paths.size()) {
      parts.push_back(e.embed_images(batch));
      if (keep_images) q.images.insert(q.images.end(), batch.begin(), batch.end());
      batch.clear();
    }
  }
  q.vectors = torch::cat(parts);
  return q;
}

// Lines of a file descriptor, with a way to ask "is another line ready now?" so that a
// resident loop can answer what it has before blocking for more.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}
  // The next line (without its newline). wait: block until one is complete or input ends;
  // otherwise return false as soon as no complete line is buffered or ready to read.
  // At the end of input a last unterminated line is returned, then false.
  bool next(std::string& line, bool wait) {
    for (;;) {
      const auto nl = buf_.find('\n', pos_);
      if (nl != std::string::npos) {
        line.assign(buf_, pos_, nl - pos_);
        pos_ = nl + 1;
        return true;
      }
      if (eof_) {
        if (pos_ == buf_.size()) return false;
        line.assign(buf_, pos_, std::string::npos);
        pos_ = buf_.size();
        return true;
      }
      if (!wait) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 0) <= 0) return false;
      }
      buf_.erase(0, pos_);
      pos_ = 0;
      char chunk[1 << 16];
      const ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error("-", std::string("cannot read standard input: ") + std::strerror(errno));
      if (n == 0) eof_ = true;
      else buf_.append(chunk, size_t(n));
    }
  }

 private:
  int fd_;
  std::string buf_;
  size_t pos_ = 0;
  bool eof_ = false;
};

// invp query --serve: each stdin line is a query (an image path, or id:N for an indexed item)
// answered by one JSON line on stdout, in input order. Lines are answered as soon as no more
// input is waiting (a script that writes one line and reads one gets its answer at once),
// and input that arrives in bulk is embedded in batches of up to kQueryBatch. A line that
// fails (unreadable image, unknown id) is answered with {"query", "error"}; the loop goes on
// until the end of input.
void serve_queries(search::IndexSet& h, int k) {
  LineReader in(STDIN_FILENO);
  std::vector<std::string> pending;
  int64_t answered = 0, failed = 0;
  const auto t0 = Clock::now();
  auto answer = [&](const std::vector<std::string>& lines) {
    const size_t n = lines.size();
    std::vector<std::string> errors(n);
    std::vector<int64_t> exclude(n, -1);
    std::vector<torch::Tensor> rows(n);
    std::vector<data::Image> images;
    std::vector<size_t> image_line;
    for (size_t i = 0; i < n; ++i) {
      try {
        const auto& l = lines[i];
        const bool id_line = l.rfind("id:", 0) == 0;
        if (id_line && l.size() > 3 && l.find_first_not_of("0123456789", 3) == std::string::npos) {
          if (l.size() > 3 + 18) throw Error(l, "id out of range");
          exclude[i] = std::stoll(l.substr(3));
          rows[i] = h.vectors({exclude[i]})[0];
        } else if (id_line && !std::filesystem::exists(l)) {
          throw Error(l, "neither an id nor a file", "id:N takes a non-negative integer");
        } else {
          images.push_back(data::read_image_file(l, 0));
          image_line.push_back(i);
        }
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    }
    if (!images.empty()) {
      try {  // e.g. an index without a model: its image lines fail, its id lines still work
        auto v = h.embedder().embed_images(images);
        for (size_t j = 0; j < image_line.size(); ++j) rows[image_line[j]] = v[int64_t(j)];
      } catch (const std::exception& e) {
        for (size_t j : image_line) errors[j] = e.what();
      }
    }
    std::vector<torch::Tensor> good;
    std::vector<int64_t> good_exclude;
    for (size_t i = 0; i < n; ++i)
      if (errors[i].empty()) good.push_back(rows[i]), good_exclude.push_back(exclude[i]);
    std::vector<std::vector<search::Hit>> hits;
    if (!good.empty()) hits = h.search(torch::stack(good), k, good_exclude);
    size_t g = 0;
    std::string out;
    for (size_t i = 0; i < n; ++i) {
      nlohmann::ordered_json j{{"query", lines[i]}};  // the query first, for people reading along
      if (!errors[i].empty()) {
        j["error"] = errors[i];
        ++failed;
      } else {
        j["hits"] = hits_json(hits[g++]);
      }
      out += j.dump() + "\n";
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
    answered += int64_t(n);
  };
  for (;;) {
    std::string line;
    const bool wait = pending.empty();
    if (in.next(line, wait)) {
      strip_cr(line);
      if (line.find_first_not_of(" \t") != std::string::npos) pending.push_back(std::move(line));
      if (pending.size() < kQueryBatch) continue;
    } else if (wait) {
      break;  // end of input, nothing left to answer
    }
    if (!pending.empty()) answer(pending);
    pending.clear();
  }
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.1f", ms_since(t0) / 1000.0);
  log::info("served " + std::to_string(answered) + " queries (" + std::to_string(failed) +
            " failed) in " + secs + " s");
}

void add_query(CLI::App& app) {
  struct Args {
    std::string model, montage, device = "cpu";
    std::vector<std::string> index, images;
    std::vector<int64_t> ids;
    int k = 10;
    bool serve = false;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand(
      "query",
      "Find the most similar images in an index: prints rank, cosine score, label and path for "
      "each query (IMAGE files, '-' for a list of paths on stdin, or --id N for an indexed item).");
  c->add_option("-i,--index", a->index,
                "Index directory (from invp index build or merge); repeat it to search several built "
                "with one model as one collection (their ids must not overlap)")
      ->required()
      ->allow_extra_args(false);  // one directory per --index: what follows is a query image
  c->add_option("images", a->images, "Query images, or '-' to read paths from stdin");
  c->add_option("--id", a->ids, "Query with indexed item(s) N (the item itself is left out)");
  c->add_option("-k", a->k, "Hits per query")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--model", a->model, "Model override (must be the index's model)");
  c->add_option("--montage", a->montage, "Also draw each query and its hits into this PNG");
  c->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  auto* serve = c->add_flag(
      "--serve", a->serve,
      "Stay resident for scripts: read queries from stdin, one a line (an image path, or id:N "
      "for an indexed item), and answer each with one JSON line on stdout as soon as it is "
      "read; a bad line gets {\"query\",\"error\"} and the loop goes on until end of input. "
      "Start-up is paid once.");
  serve->excludes(c->get_option("images"))->excludes(c->get_option("--id"))->excludes(c->get_option("--montage"));
  c->callback([a] {
    globals().action = [a] {
      auto t0 = Clock::now();
      if (a->index.size() == 1) prepare_heap_for(a->index[0]);  // one-way: only for a single file's size
      search::IndexSet h(a->index, a->model, a->device);
      if (a->serve) return serve_queries(h, a->k);
      double load_ms = ms_since(t0);
      auto t1 = Clock::now();
      auto q = read_queries(h, a->images, a->ids, !a->montage.empty());
      double embed_ms = ms_since(t1);
      auto t2 = Clock::now();
      auto hits = h.search(q.vectors, a->k, q.exclude);
      double search_ms = ms_since(t2);
      if (!a->montage.empty()) {
        std::vector<data::Image> firsts = q.images;
        if (firsts.empty()) {
          data::ImageFetcher fetch(3);
          for (int64_t id : a->ids) firsts.push_back(fetch.get(h.describe(id, 1).path));
        }
        search::write_hits_montage(firsts, {}, hits, a->k + 1, 96, a->montage);
      }
      if (globals().json) {
        nlohmann::json out = nlohmann::json::array();
        for (size_t i = 0; i < hits.size(); ++i) out.push_back({{"query", q.names[i]}, {"hits", hits_json(hits[i])}});
        nlohmann::json j{{"index", a->index.size() == 1 ? nlohmann::json(a->index[0]) : nlohmann::json(a->index)}, {"k", a->k}, {"results", out},
                         {"timings_ms", {{"load", load_ms}, {"embed", embed_ms}, {"search", search_ms},
                                         {"total", ms_since(t0)}}}};
        if (!a->montage.empty()) j["montage"] = a->montage;
        std::cout << j.dump() << "\n";
      } else {
        for (size_t i = 0; i < hits.size(); ++i) {
          std::cout << "query " << q.names[i] << "\n";
          std::printf("%4s  %6s  %-16s  %s\n", "rank", "score", "label", "path");
          for (size_t r = 0; r < hits[i].size(); ++r) {
            const auto& x = hits[i][r];
            std::printf("%4zu  %6.3f  %-16s  %s\n", r + 1, x.score, label_text(x).c_str(), x.path.c_str());
          }
          if (i + 1 < hits.size()) std::cout << "\n";
        }
        std::fflush(stdout);
        if (!a->montage.empty()) log::info("montage: " + a->montage);
      }
    };
  });
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
      search::IndexHandle h(a->index, a->model);
      namespace fs = std::filesystem;
      if (!a->image.empty()) {
        auto q = h.embedder().embed_images({data::read_image_file(a->image, 0)});
        auto cats = search::nearest_categories(h, q, a->k > 0 ? a->k : 50);
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
        auto r = search::category_report(h, a->k > 0 ? a->k : 10, a->max_queries, globals().seed);
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
        auto cl = search::cluster_collection(h, a->clusters, 8, 100000, globals().seed);
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
        auto img = data::read_image_file(a->propagation, 0);
        auto q = h.embedder().embed_images({img});
        auto v = search::propagation(h, q, a->k > 0 ? a->k : 4, a->hops);
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
