#include <invp/search/query_service.h>

#include <invp/core/log.h>
#include <invp/data/decode.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <istream>
#include <map>

namespace invp::search {
namespace fs = std::filesystem;
namespace {
using Clock = std::chrono::steady_clock;
double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

Fault fault_of(const std::exception& e, Fault otherwise) {
  if (auto* q = dynamic_cast<const QueryError*>(&e)) return q->fault();
  if (auto* er = dynamic_cast<const Error*>(&e); er && er->file() == "--filter") return Fault::bad_request;
  return otherwise;
}
}  // namespace

// A queued piece of work: a query (decoded already, or an id) or a task on the handle.
struct QueryService::Item {
  QueryRequest request;
  data::Image image;
  std::function<void(IndexHandle&)> task;  // set for tasks
  std::promise<QueryResult> result;
  std::promise<void> done;                 // for tasks
  bool keep_image = false;
};

QueryService::QueryService(const std::string& dir, ServiceOptions opts)
    : dir_(dir), opts_(std::move(opts)) {
  handle_ = std::make_unique<IndexHandle>(dir_, opts_.model_override, opts_.device);
  generation_ = handle_->info().generation;
  last_check_ = now_s();
  if (opts_.background) engine_ = std::thread([this] { engine_loop(); });
}

QueryService::~QueryService() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (engine_.joinable()) engine_.join();
}

void QueryService::check_k(int k) const {
  if (k < 1 || k > opts_.max_k)
    throw QueryError(Fault::bad_request, "k", "k must be between 1 and " + std::to_string(opts_.max_k));
}

data::Image QueryService::decode(const QueryRequest& r) const {
  data::Image img;
  try {
    img = r.path.empty() ? data::decode_image(r.image, 0, r.name) : data::read_image_file(r.path, 0);
  } catch (const std::exception& e) {
    throw QueryError(Fault::unprocessable, "", e.what());
  }
  if (opts_.max_pixels > 0 && int64_t(img.width) * img.height > opts_.max_pixels)
    throw QueryError(Fault::too_large, r.name, "image of " + std::to_string(img.width) + "x" +
                                                   std::to_string(img.height) + " pixels is over the cap of " +
                                                   std::to_string(opts_.max_pixels) + " pixels");
  return img;
}

torch::Tensor QueryService::vector_of(IndexHandle& h, const QueryRequest& r, data::Image* decoded) {
  if (r.id >= 0 || (r.image.empty() && r.path.empty())) {
    if (r.id < 0) throw QueryError(Fault::bad_request, "", "give an image or an id");
    if (h.row_of(r.id) < 0) throw QueryError(Fault::not_found, "", "no item with id " + std::to_string(r.id));
    return h.vectors({r.id});
  }
  auto img = decode(r);
  auto v = h.embedder().embed_images({img});
  if (decoded) *decoded = std::move(img);
  return v;
}

void QueryService::run_on_engine(const std::function<void(IndexHandle&)>& fn) {
  if (!opts_.background) {
    std::lock_guard<std::mutex> l(inline_mu_);
    maybe_reload();
    return fn(*handle_);
  }
  auto it = std::make_shared<Item>();
  it->task = fn;
  auto f = it->done.get_future();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) throw QueryError(Fault::unavailable, "", "the service is stopping");
    queue_.push_back(it);
    ++queued_;
  }
  cv_.notify_one();
  f.get();  // rethrows the task's exception
}

void QueryService::with_index(const std::function<void(IndexHandle&)>& fn) { run_on_engine(fn); }

QueryResult QueryService::query(QueryRequest request) {
  std::vector<QueryRequest> one;
  one.push_back(std::move(request));
  return std::move(query_many(std::move(one))[0]);
}

std::vector<QueryResult> QueryService::query_many(std::vector<QueryRequest> requests, bool keep_images,
                                                  BatchTimings* timings) {
  std::vector<std::shared_ptr<Item>> items;
  std::vector<QueryResult> out(requests.size());
  std::vector<std::future<QueryResult>> futures(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    auto it = std::make_shared<Item>();
    it->request = std::move(requests[i]);
    it->keep_image = keep_images;
    futures[i] = it->result.get_future();
    items.push_back(it);
  }
  // Decoded here, on the caller's thread (a bounded pool in the server), in chunks so a long
  // list never holds all its images at once unless they are kept.
  for (size_t start = 0; start < items.size(); start += opts_.max_batch) {
    const size_t end = std::min(items.size(), start + opts_.max_batch);
    std::vector<std::shared_ptr<Item>> chunk;
    for (size_t i = start; i < end; ++i) {
      auto& it = items[i];
      try {
        check_k(it->request.k);
        Filter::parse(it->request.filter);  // a malformed filter is the client's mistake
        if (it->request.id < 0) it->image = decode(it->request);
      } catch (const std::exception& e) {
        it->result.set_value({it->request.name, {}, fault_of(e, Fault::unprocessable), e.what(), {}, {}});
        continue;
      }
      chunk.push_back(it);
    }
    if (chunk.empty()) continue;
    if (!opts_.background) {
      std::lock_guard<std::mutex> l(inline_mu_);
      maybe_reload();
      answer(chunk, timings);
      continue;
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) {
        for (auto& it : chunk)
          it->result.set_value({it->request.name, {}, Fault::unavailable, "the service is stopping", {}, {}});
        continue;
      }
      for (auto& it : chunk) queue_.push_back(it);
      queued_ += chunk.size();
    }
    cv_.notify_one();
    // Waiting per chunk keeps a long list's decoded images bounded.
    for (size_t i = start; i < end; ++i) out[i] = futures[i].get();
  }
  for (size_t i = 0; i < items.size(); ++i)
    if (futures[i].valid()) out[i] = futures[i].get();
  return out;
}

// Embeds the images of BATCH together, looks up its ids, and searches each k once.
void QueryService::answer(std::vector<std::shared_ptr<Item>>& batch, BatchTimings* t) {
  IndexHandle& h = *handle_;
  const size_t n = batch.size();
  std::vector<std::string> errors(n);
  std::vector<Fault> faults(n, Fault::none);
  std::vector<torch::Tensor> rows(n);
  std::vector<data::Image> images;
  std::vector<size_t> image_of;
  auto t0 = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    const auto& r = batch[i]->request;
    try {
      if (r.id >= 0) {
        if (h.row_of(r.id) < 0) throw QueryError(Fault::not_found, "", "no item with id " + std::to_string(r.id));
        rows[i] = h.vectors({r.id})[0];
      } else {
        images.push_back(batch[i]->image);
        image_of.push_back(i);
      }
    } catch (const std::exception& e) {
      errors[i] = e.what();
      faults[i] = fault_of(e, Fault::bad_request);
    }
  }
  if (!images.empty()) {
    try {  // e.g. an index without a model: its image queries fail, its id queries still work
      auto v = h.embedder().embed_images(images);
      for (size_t j = 0; j < image_of.size(); ++j) rows[image_of[j]] = v[int64_t(j)];
    } catch (const std::exception& e) {
      for (size_t j : image_of) errors[j] = e.what(), faults[j] = Fault::unprocessable;
    }
  }
  auto t1 = Clock::now();
  std::map<std::pair<int, std::string>, std::vector<size_t>> groups;  // one search per (k, filter)
  for (size_t i = 0; i < n; ++i)
    if (errors[i].empty()) groups[{batch[i]->request.k, batch[i]->request.filter}].push_back(i);
  std::vector<std::vector<Hit>> hits(n);
  std::vector<std::string> notes(n);
  for (auto& [key, which] : groups) {
    std::vector<torch::Tensor> q;
    std::vector<int64_t> exclude;
    for (size_t i : which) q.push_back(rows[i]), exclude.push_back(batch[i]->request.id);
    try {
      std::string note;
      auto found = search(h, torch::stack(q), key.first, exclude, key.second, &note);
      for (size_t j = 0; j < which.size(); ++j) {
        hits[which[j]] = std::move(found[j]);
        if (int(hits[which[j]].size()) < key.first) notes[which[j]] = note;
      }
    } catch (const std::exception& e) {
      // A filter naming a category the index lacks is the client's; anything else the engine's.
      for (size_t i : which) errors[i] = e.what(), faults[i] = fault_of(e, Fault::unavailable);
    }
  }
  if (t) t->embed_ms += std::chrono::duration<double, std::milli>(t1 - t0).count(), t->search_ms += ms_since(t1);
  ++batches_;
  for (size_t i = 0; i < n; ++i) {
    QueryResult r{batch[i]->request.name, std::move(hits[i]), faults[i], errors[i], notes[i], {}};
    if (batch[i]->keep_image) r.image = std::move(batch[i]->image);
    batch[i]->image = {};
    batch[i]->result.set_value(std::move(r));
  }
}

// IndexHandle::search with the hits described through the cache.
std::vector<std::vector<Hit>> QueryService::search(IndexHandle& h, const torch::Tensor& q, int k,
                                                   const std::vector<int64_t>& exclude, const std::string& filter,
                                                   std::string* note) {
  if (q.dim() != 2 || q.size(1) != h.info().dim) return h.search(q, k, exclude);  // its error
  constexpr size_t kMaxDescribed = 200000;
  const Filter f = Filter::parse(filter);
  const index::IdSet* allowed = f.empty() ? nullptr : &h.allowed(f);
  index::FilterStats st;
  // The whole directory (added slice, re-ranking, tombstones); one spare for the query's own id.
  auto res = h.search_ids(q.contiguous(), k + 1, allowed, &st);
  if (allowed && note)
    *note = "only " + std::to_string(allowed->count()) + " items match the filter '" + f.text() + "'";
  auto ids = res.indices.accessor<int64_t, 2>();
  auto sims = res.similarities.accessor<float, 2>();
  std::vector<std::vector<Hit>> out(size_t(q.size(0)));
  for (int64_t r = 0; r < q.size(0); ++r) {
    auto& row = out[size_t(r)];
    for (int64_t j = 0; j < res.indices.size(1) && int(row.size()) < k; ++j) {
      const int64_t id = ids[r][j];
      if (id < 0 || id == exclude[size_t(r)]) continue;
      auto it = described_.find(id);
      if (it == described_.end()) {
        if (described_.size() >= kMaxDescribed) described_.clear();
        it = described_.emplace(id, h.describe(id, 0)).first;
      }
      row.push_back(it->second);
      row.back().score = sims[r][j];
    }
  }
  return out;
}

void QueryService::engine_loop() {
  for (;;) {
    std::vector<std::shared_ptr<Item>> batch;
    std::shared_ptr<Item> task;
    {
      std::unique_lock<std::mutex> l(mu_);
      const auto ready = [&] { return stopping_ || !queue_.empty(); };
      if (opts_.reload_seconds > 0) {
        // An idle engine still looks for a newer generation, so /health and the first
        // request after `index add` see it without waiting for traffic to trigger a check.
        if (!cv_.wait_for(l, std::chrono::duration<double>(opts_.reload_seconds), ready)) {
          l.unlock();
          maybe_reload();
          continue;
        }
      } else {
        cv_.wait(l, ready);
      }
      if (queue_.empty()) return;  // stopping, and everything queued was answered
      if (queue_.front()->task) {
        task = queue_.front();
        queue_.pop_front();
      } else {
        while (!queue_.empty() && !queue_.front()->task && batch.size() < opts_.max_batch) {
          batch.push_back(queue_.front());
          queue_.pop_front();
        }
      }
      queued_ -= task ? 1 : batch.size();
    }
    maybe_reload();
    if (task) {
      try {
        task->task(*handle_);
        task->done.set_value();
      } catch (...) {
        task->done.set_exception(std::current_exception());
      }
    } else {
      answer(batch, nullptr);
    }
  }
}

// Switches to a newer generation of the directory (committed by `index add`) between batches.
// A directory that cannot be opened right now keeps the current handle; the next check retries.
void QueryService::maybe_reload() {
  if (opts_.reload_seconds <= 0 || now_s() - last_check_ < opts_.reload_seconds) return;
  last_check_ = now_s();
  try {
    const int gen = read_index_info(dir_).generation;
    if (gen == generation_) return;
    auto fresh = std::make_unique<IndexHandle>(dir_, opts_.model_override, opts_.device);
    fresh->ann();
    handle_ = std::move(fresh);
    described_.clear();
    generation_ = handle_->info().generation;
    log::info("index " + dir_ + ": now serving generation " + std::to_string(generation_.load()) + " (" +
              std::to_string(handle_->info().size) + " items)");
  } catch (const std::exception& e) {
    log::warn(std::string("index reload deferred: ") + e.what());
  }
}

std::vector<CategoryScore> QueryService::categories(const QueryRequest& request, int k) {
  check_k(k);
  QueryRequest r = request;
  data::Image img;
  if (r.id < 0) img = decode(r), r.path.clear(), r.image.clear();
  std::vector<CategoryScore> out;
  run_on_engine([&](IndexHandle& h) {
    if (!h.has_labels()) throw QueryError(Fault::not_found, dir_, "this index has no labels, so no categories");
    auto q = r.id >= 0 ? vector_of(h, r, nullptr) : h.embedder().embed_images({img});
    out = nearest_categories(h, q, k, 0.07, r.id);
  });
  return out;
}

PropagationView QueryService::propagation(const QueryRequest& request, int k, int hops, data::Image* decoded) {
  check_k(k);
  if (hops < 1 || hops > 8) throw QueryError(Fault::bad_request, "hops", "hops must be between 1 and 8");
  QueryRequest r = request;
  data::Image img;
  if (r.id < 0) img = decode(r);
  PropagationView out;
  run_on_engine([&](IndexHandle& h) {
    auto q = r.id >= 0 ? vector_of(h, r, nullptr) : h.embedder().embed_images({img});
    out = search::propagation(h, q, k, hops);
  });
  if (decoded) *decoded = std::move(img);
  return out;
}

nlohmann::json QueryService::info() {
  nlohmann::json j;
  run_on_engine([&](IndexHandle& h) {
    j["index"] = nlohmann::json::parse(h.info().to_json());
    j["index"].erase("files");  // local file names and hashes: nothing a browser needs
    j["generation"] = h.info().generation;
    j["size"] = h.info().size;
    j["categories"] = h.categories();
    const auto model_json = fs::path(dir_) / "model.json";
    std::ifstream f(model_json);
    if (h.info().has_model && f) j["model"] = nlohmann::json::parse(f, nullptr, false);
  });
  j["batches"] = batches_.load();
  return j;
}

data::Image QueryService::item_image(int64_t id) {
  std::string path;
  run_on_engine([&](IndexHandle& h) {
    if (id < 0 || h.row_of(id) < 0) throw QueryError(Fault::not_found, "", "no item with id " + std::to_string(id));
    path = h.describe(id, 0).path;
  });
  // The recorded path only: a client names an id, never a file.
  std::lock_guard<std::mutex> l(fetch_mu_);
  try {
    return fetcher_.get(path);
  } catch (const std::exception& e) {
    throw QueryError(Fault::not_found, "", std::string("item ") + std::to_string(id) + " cannot be read: " + e.what());
  }
}

nlohmann::json hits_json(const std::vector<Hit>& hits) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t r = 0; r < hits.size(); ++r) {
    const auto& h = hits[r];
    nlohmann::json j{{"rank", int(r + 1)}, {"id", h.id}, {"score", h.score}, {"label", h.label}, {"path", h.path}};
    if (!h.category.empty()) j["category"] = h.category;
    out.push_back(std::move(j));
  }
  return out;
}

std::vector<std::string> read_path_list(std::istream& in) {
  std::vector<std::string> paths;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF lists
    if (!line.empty()) paths.push_back(line);
  }
  return paths;
}

}  // namespace invp::search
