#include <invp/data/loader.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>

#include <invp/core/error.h>
#include <invp/core/log.h>

namespace invp::data {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Distinct streams for the shuffle (tag 0) and each sample's augmentation (tag 1).
uint64_t mix(uint64_t seed, uint64_t epoch, uint64_t tag, uint64_t item) {
  return splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ tag) ^ item);
}

}  // namespace

Loader::Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions opts)
    : ds_(std::move(dataset)), opts_(std::move(opts)) {
  if (!ds_) throw Error("", "loader: no dataset");
  if (opts_.batch_size <= 0) throw Error("", "loader: batch size must be positive");
  if (opts_.shards < 1 || opts_.shard < 0 || opts_.shard >= opts_.shards)
    throw Error("", "loader: shard " + std::to_string(opts_.shard) + " of " + std::to_string(opts_.shards));
  opts_.workers = std::max(1, opts_.workers);
  opts_.queue_batches = std::max(1, opts_.queue_batches);
}

Loader::~Loader() { stop_workers(); }

size_t Loader::batches_per_epoch() const {
  size_t n = ds_->size(), bs = size_t(opts_.batch_size) * size_t(opts_.shards);
  return opts_.drop_last ? n / bs : (n + bs - 1) / bs;
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

size_t Loader::position() const {
  std::lock_guard<std::mutex> lk(mu_);
  return next_out_;
}

void Loader::start_epoch(int epoch, size_t first_batch) {
  stop_workers();
  epoch_ = epoch;
  const size_t n = ds_->size();
  order_.resize(n);
  for (size_t i = 0; i < n; ++i) order_[i] = int64_t(i);
  if (opts_.shuffle && n > 1) {
    std::mt19937_64 rng(mix(opts_.seed, uint64_t(epoch), 0, 0));
    // Own bounded draw (not uniform_int_distribution) so the order is library-independent.
    for (size_t i = n - 1; i > 0; --i) {
      size_t j = size_t((double(rng() >> 11) * 0x1.0p-53) * double(i + 1));
      std::swap(order_[i], order_[j]);
    }
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    ready_.clear();
    n_batches_ = batches_per_epoch();
    next_claim_ = next_out_ = std::min(first_batch, n_batches_);
    stop_ = false;
  }
  int nthreads = int(std::min<size_t>(size_t(opts_.workers), std::max<size_t>(1, n_batches_)));
  for (int t = 0; t < nthreads; ++t) threads_.emplace_back([this] { worker_loop(); });
}

void Loader::worker_loop() {
  for (;;) {
    size_t b;
    {
      std::unique_lock<std::mutex> lk(mu_);
      // Claim in order, no further ahead of the consumer than the queue allows.
      cv_.wait(lk, [&] {
        return stop_ || next_claim_ >= n_batches_ ||
               next_claim_ < next_out_ + size_t(opts_.queue_batches);
      });
      if (stop_ || next_claim_ >= n_batches_) return;
      b = next_claim_++;
    }
    Slot slot = build(b);
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_) return;
      ready_.emplace(b, std::move(slot));
    }
    cv_.notify_all();
  }
}

Loader::Slot Loader::build(size_t b) {
  Slot slot;
  try {
    const size_t bs = size_t(opts_.batch_size);
    const size_t begin = std::min(order_.size(), b * bs * size_t(opts_.shards) + size_t(opts_.shard) * bs);
    const size_t end = std::min(order_.size(), begin + bs);
    std::vector<Image> images;
    std::vector<int64_t> idx;
    std::vector<int64_t> labels;
    std::vector<std::string> paths;
    images.reserve(end - begin);
    for (size_t k = begin; k < end; ++k) {
      const int64_t i = order_[k];
      Sample s;
      try {
        s = ds_->get(size_t(i));
      } catch (const Error& e) {
        if (opts_.strict) throw;
        ++bad_;
        if (warned_.fetch_add(1) < 5) log::warn(std::string("skipping bad item: ") + e.what());
        continue;
      }
      std::mt19937_64 rng(mix(opts_.seed, uint64_t(epoch_), 1, uint64_t(i)));
      images.push_back(augment(s.image, opts_.augment, rng));
      idx.push_back(i);
      labels.push_back(s.label);
      paths.push_back(std::move(s.path));
    }
    if (opts_.shards > 1 && images.size() < end - begin) {
      // Data-parallel shares keep their size, so that every rank's collectives see the same
      // shapes: a bad item's slot is taken by another item of the same share, seen twice.
      if (images.empty())
        throw Error("", "every item of this rank's share of batch " + std::to_string(b) + " is unreadable",
                    "remove the bad files (invp data info --strict names them)");
      for (size_t k = 0, have = images.size(); images.size() < end - begin; ++k) {
        images.push_back(images[k % have]);
        idx.push_back(idx[k % have]);
        labels.push_back(labels[k % have]);
        paths.push_back(paths[k % have]);
      }
    }
    if (images.empty()) return slot;
    const int64_t n = int64_t(images.size());
    const int c = images[0].channels, h = images[0].height, w = images[0].width;
    auto out = torch::empty({n, c, h, w}, torch::TensorOptions(torch::kFloat32).pinned_memory(opts_.pin_memory));
    float* dst = out.data_ptr<float>();
    const size_t per = size_t(c) * h * w;
    for (int64_t k = 0; k < n; ++k) {
      const Image& im = images[size_t(k)];
      if (im.channels != c || im.height != h || im.width != w)
        throw Error("", "loader: augmented images differ in shape within a batch (mixed "
                        "channel counts in the dataset?)");
      normalise_into(im, opts_.augment, dst + size_t(k) * per);
    }
    Batch batch;
    batch.images = out;
    batch.indices = torch::empty({n}, torch::TensorOptions(torch::kInt64).pinned_memory(opts_.pin_memory));
    std::copy(idx.begin(), idx.end(), batch.indices.data_ptr<int64_t>());
    batch.labels = torch::from_blob(labels.data(), {n}, torch::kInt64).clone();
    batch.paths = std::move(paths);
    slot.batch = std::move(batch);
  } catch (...) {
    slot.error = std::current_exception();
  }
  return slot;
}

std::optional<Batch> Loader::next() {
  for (;;) {
    Slot slot;
    {
      std::unique_lock<std::mutex> lk(mu_);
      if (threads_.empty() || next_out_ >= n_batches_) return std::nullopt;
      cv_.wait(lk, [&] { return ready_.count(next_out_) > 0; });
      auto it = ready_.find(next_out_);
      slot = std::move(it->second);
      ready_.erase(it);
      ++next_out_;
    }
    cv_.notify_all();
    if (slot.error) std::rethrow_exception(slot.error);
    if (slot.batch) return std::move(slot.batch);
  }
}

}  // namespace invp::data
