// The query engine behind `invp query`, `query --serve`, `inspect IMAGE|--propagation` and
// `invp serve`: it owns one loaded index directory and answers typed requests (image bytes,
// an image file, or an indexed id; k) with typed results (hits, nearest categories, the
// propagated set, the index's facts, an item's pixels).
// Threads: every call is safe from any thread (without background mode they take turns). In background mode one engine thread owns the
// IndexHandle (HDF5 is used from one thread only) and takes whatever requests are queued
// when it is free, so concurrent queries are embedded and searched together in one batch;
// images are decoded on the caller's thread first. Without background mode the calls run on
// the caller's thread (one-shot commands). Embeddings: float32, L2-normalised rows, as
// IndexHandle::search expects.
#pragma once
#include <invp/core/error.h>
#include <invp/data/dataset.h>
#include <invp/data/fetch.h>
#include <invp/search/index_dir.h>
#include <invp/search/inspect.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace invp::search {

// What kind of problem a request had, so a front end can answer it in its own terms (a JSON
// line, an HTTP status) without parsing messages.
enum class Fault { none, bad_request, not_found, too_large, unprocessable, unavailable };

class QueryError : public Error {
 public:
  QueryError(Fault fault, const std::string& file, const std::string& problem, const std::string& fix = "")
      : Error(file, problem, fix), fault_(fault) {}
  Fault fault() const { return fault_; }

 private:
  Fault fault_;
};

struct QueryRequest {
  std::string name;            // echoed back as the result's name ("id 5", a path, "upload")
  int64_t id = -1;             // an indexed item, left out of its own hits; or
  std::vector<uint8_t> image;  // an encoded image (PNG, JPEG, ...); or
  std::string path;            // an image file named by the operator (never by a remote client)
  int k = 10;
  std::string filter;          // hits restricted to the items this admits (filter.h grammar)
};

struct QueryResult {
  std::string name;
  std::vector<Hit> hits;
  Fault fault = Fault::none;
  std::string error;           // set when fault != none
  std::string note;            // e.g. fewer than k hits because few items match the filter
  data::Image image;           // the decoded query image, when asked to keep it (montages)
};

struct ServiceOptions {
  std::string model_override;  // another model.pt whose hash must equal the index's
  std::string device = "cpu";
  size_t max_batch = 64;       // queries embedded and searched together at most
  int max_k = 1000;            // larger k is a bad request (a client cannot ask for the collection)
  int64_t max_pixels = 0;      // decoded images over this many pixels are refused (0 = no cap)
  bool background = false;     // an engine thread batches concurrent callers
  // With background: how often index.json is checked for a new generation (from `index add`);
  // the switch happens between batches, so no request is dropped. 0 = never.
  double reload_seconds = 0;
};

// Per-batch timings of the last inline query_many (the one-shot CLI reports them).
struct BatchTimings {
  double embed_ms = 0, search_ms = 0;
};

class QueryService {
 public:
  // Opens DIR (IndexHandle's checks); throws invp::Error like IndexHandle.
  explicit QueryService(const std::string& dir, ServiceOptions opts = {});
  ~QueryService();  // stops the engine after answering what is queued
  QueryService(const QueryService&) = delete;
  QueryService& operator=(const QueryService&) = delete;

  // One query; a problem comes back in the result (fault + error), never as an exception.
  QueryResult query(QueryRequest request);
  // Several queries, answered in order (decoded, embedded and searched in batches).
  std::vector<QueryResult> query_many(std::vector<QueryRequest> requests, bool keep_images = false,
                                      BatchTimings* timings = nullptr);
  // Nearest categories of an image or an indexed item (which is left out of its own vote).
  // These and the calls below throw QueryError.
  std::vector<CategoryScore> categories(const QueryRequest& request, int k = 50);
  // The propagated set of an image or an indexed item, hop by hop.
  PropagationView propagation(const QueryRequest& request, int k = 4, int hops = 3, data::Image* decoded = nullptr);
  // Index and model facts as JSON: index.json's fields, model.json, categories, generation.
  nlohmann::json info();
  // An indexed item's pixels, read from its recorded path (a file, or <file>#<n> in a container).
  data::Image item_image(int64_t id);
  // Runs FN with the index on the engine (for reports that need the whole handle).
  void with_index(const std::function<void(IndexHandle&)>& fn);

  size_t queue_depth() const { return queued_.load(); }
  int generation() const { return generation_.load(); }
  int64_t batches() const { return batches_.load(); }
  const std::string& dir() const { return dir_; }

 private:
  struct Item;
  std::string dir_;
  ServiceOptions opts_;
  std::unique_ptr<IndexHandle> handle_;
  std::atomic<int> generation_{0};
  std::atomic<size_t> queued_{0};
  std::atomic<int64_t> batches_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Item>> queue_;
  bool stopping_ = false;
  std::thread engine_;
  std::mutex fetch_mu_;
  data::ImageFetcher fetcher_{0};
  double last_check_ = 0;
  // Hits' label/path/category by id: each costs HDF5 reads, which a busy server would
  // otherwise repeat for every hit of every query on its one engine thread. Bounded; used
  // only on the engine (or under inline_mu_), cleared on a generation switch.
  std::unordered_map<int64_t, Hit> described_;
  std::mutex inline_mu_;  // without background mode, callers take turns on the handle

  void engine_loop();
  void maybe_reload();
  void run_on_engine(const std::function<void(IndexHandle&)>& fn);
  void answer(std::vector<std::shared_ptr<Item>>& batch, BatchTimings* t);
  data::Image decode(const QueryRequest& r) const;
  torch::Tensor vector_of(IndexHandle& h, const QueryRequest& r, data::Image* decoded);
  void check_k(int k) const;
  std::vector<std::vector<Hit>> search(IndexHandle& h, const torch::Tensor& q, int k, const std::vector<int64_t>& exclude,
                                       const std::string& filter, std::string* note);
};

// Hits as the `--json query` schema: rank (from 1), id, score, label, path, category if known.
nlohmann::json hits_json(const std::vector<Hit>& hits);

// The image paths of a list (one a line, CR stripped, blank lines skipped): `query -`.
std::vector<std::string> read_path_list(std::istream& in);

// `invp query --serve`: each line of IN_FD is an image path or id:N, answered by one JSON line
// {"query","hits"[,"note"]} or {"query","error"} on OUT in input order, as soon as no more input is
// waiting; input that arrives in bulk is answered in batches. Runs until the end of input.
struct LineLoopReport {
  int64_t answered = 0, failed = 0;
  double seconds = 0;
};
// FILTER (filter.h grammar) restricts every line's hits.
LineLoopReport serve_lines(QueryService& service, int in_fd, std::FILE* out, int k, const std::string& filter = "");

}  // namespace invp::search
