// AnnIndex: a FAISS index that always maps stable int64 ids (IndexIDMap2 around indexes
// without native ids, IVF's own ids otherwise), with validated file I/O.
#include <invp/core/atomic_file.h>
#include <invp/core/error.h>
#include <invp/core/hash.h>
#include <invp/index/ann_detail.h>
#include <invp/index/ann_index.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <faiss/AutoTune.h>
#include <faiss/IVFlib.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/VectorTransform.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/invlists/OnDiskInvertedLists.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <typeinfo>

#include <fcntl.h>
#include <unistd.h>

namespace invp::index {
namespace {

static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "FAISS ids must be int64");

// OPQ rotation training: outer iterations and PQ k-means iterations of the first one
// (FAISS defaults 50 and 40). Each outer iteration retrains a PQ; on clustered unit vectors
// more iterations barely lowered the quantisation error and did not change recall@10, while
// each one is slow on this build (scalar distance kernels), so FAISS's 50 made OPQ training
// take far longer than the IVF-PQ training it precedes.
constexpr int kOpqIterations = 10;
constexpr int kOpqFirstPqIterations = 10;

using detail::core_of;

// Stable ids: an id map anywhere outside, or IVF (which stores ids in its lists).
bool has_stable_ids(const faiss::Index* idx) {
  if (dynamic_cast<const faiss::IndexIDMap*>(idx)) return true;
  return dynamic_cast<const faiss::IndexIVF*>(core_of(idx)) != nullptr;
}

// A factory-style description of a loaded index (FAISS files do not keep the string); it
// reproduces the strings of the built-in recipes.
std::string describe(const faiss::Index* idx) {
  if (auto* p = dynamic_cast<const faiss::IndexPreTransform*>(idx)) {
    // FAISS writes an OPQMatrix as a plain LinearTransform ("LTra"), so a loaded one comes
    // back as that base class; in front of PQ codes it can only have been OPQ.
    const faiss::Index* core = core_of(p->index);
    int64_t pq_m = 0;
    if (auto* v = dynamic_cast<const faiss::IndexIVFPQ*>(core)) pq_m = int64_t(v->pq.M);
    std::string s;
    for (const faiss::VectorTransform* t : p->chain) {
      if (auto* o = dynamic_cast<const faiss::OPQMatrix*>(t)) {
        s += "OPQ" + std::to_string(o->M) + (o->d_out != o->d_in ? "_" + std::to_string(o->d_out) : "");
      } else if (dynamic_cast<const faiss::PCAMatrix*>(t)) {
        s += "PCA" + std::to_string(t->d_out);
      } else if (dynamic_cast<const faiss::RandomRotationMatrix*>(t)) {
        s += "RR" + std::to_string(t->d_out);
      } else if (dynamic_cast<const faiss::NormalizationTransform*>(t)) {
        s += "L2norm";
      } else if (typeid(*t) == typeid(faiss::LinearTransform) && pq_m > 0) {
        s += "OPQ" + std::to_string(pq_m) + (t->d_out != t->d_in ? "_" + std::to_string(t->d_out) : "");
      } else {
        s += "Transform" + std::to_string(t->d_out);
      }
      s += ",";
    }
    return s + describe(p->index);
  }
  if (auto* m = dynamic_cast<const faiss::IndexIDMap2*>(idx)) return "IDMap2," + describe(m->index);
  if (auto* m = dynamic_cast<const faiss::IndexIDMap*>(idx)) return "IDMap," + describe(m->index);
  if (auto* h = dynamic_cast<const faiss::IndexHNSWFlat*>(idx))
    return "HNSW" + std::to_string(h->hnsw.nb_neighbors(1)) + ",Flat";
  if (auto* v = dynamic_cast<const faiss::IndexIVFPQ*>(idx))
    return "IVF" + std::to_string(v->nlist) + ",PQ" + std::to_string(v->pq.M) +
           (v->pq.nbits != 8 ? "x" + std::to_string(v->pq.nbits) : "") + (v->polysemous_ht == 0 ? "np" : "");
  if (auto* v = dynamic_cast<const faiss::IndexIVFFlat*>(idx)) return "IVF" + std::to_string(v->nlist) + ",Flat";
  if (dynamic_cast<const faiss::IndexFlat*>(idx)) return "Flat";
  return "unknown";
}

faiss::MetricType parse_metric(const std::string& m) {
  if (m == "ip") return faiss::METRIC_INNER_PRODUCT;
  if (m == "l2") return faiss::METRIC_L2;
  throw Error("", "unknown metric '" + m + "'", "use \"ip\" or \"l2\"");
}

}  // namespace

namespace detail {
void check_matrix(const at::Tensor& t, int64_t dim, const char* what) {
  const std::string w = what;
  if (!t.defined()) throw Error("", w + " tensor is undefined");
  if (t.dim() != 2) throw Error("", w + " must be 2-D (rows×dim), got " + std::to_string(t.dim()) + "-D");
  if (t.scalar_type() != at::kFloat) throw Error("", w + " must be float32", "convert with .to(at::kFloat)");
  if (!t.device().is_cpu()) throw Error("", w + " must be on the CPU");
  if (!t.is_contiguous()) throw Error("", w + " must be contiguous", "call .contiguous() first");
  if (dim >= 0 && t.size(1) != dim)
    throw Error("", w + " have dim " + std::to_string(t.size(1)) + " but the index has dim " + std::to_string(dim));
}
}  // namespace detail

AnnIndex::AnnIndex(const Recipe& recipe, int64_t dim, int64_t expected_n) : impl_(std::make_unique<Impl>()) {
  if (dim < 1 || dim > (1 << 20)) throw Error("", "index dimension " + std::to_string(dim) + " out of range");
  const faiss::MetricType metric = parse_metric(recipe.metric);
  const std::string resolved = detail::resolve_factory(recipe, dim, expected_n);
  if (resolved.size() > 200) throw Error("", "factory string longer than 200 characters");
  detail::check_factory(resolved, dim);
  faiss::Index* raw = nullptr;
  try {
    raw = faiss::index_factory(int(dim), resolved.c_str(), metric);
  } catch (const std::exception& e) {
    throw Error("", "FAISS rejects factory '" + resolved + "' for dim " + std::to_string(dim) + ": " + e.what(),
                "check the recipe's factory string");
  }
  impl_->index.reset(raw);
  impl_->factory = resolved;
  if (!has_stable_ids(raw)) {
    auto* map = new faiss::IndexIDMap2(raw);
    map->own_fields = true;
    impl_->index.release();
    impl_->index.reset(map);
    impl_->factory = "IDMap2," + resolved;
  }
  impl_->train_size = recipe.train_size;
  impl_->find_core();
  if (auto* p = dynamic_cast<faiss::IndexPreTransform*>(raw)) {
    for (faiss::VectorTransform* t : p->chain) {
      if (auto* o = dynamic_cast<faiss::OPQMatrix*>(t)) {
        o->niter = kOpqIterations;
        o->niter_pq_0 = kOpqFirstPqIterations;
      }
    }
  }
  set_search_params(recipe.search);
}

AnnIndex::AnnIndex(AnnIndex&&) noexcept = default;
AnnIndex& AnnIndex::operator=(AnnIndex&&) noexcept = default;
AnnIndex::~AnnIndex() = default;

bool AnnIndex::is_trained() const { return impl_->index->is_trained; }
int64_t AnnIndex::size() const { return impl_->index->ntotal; }
int64_t AnnIndex::dim() const { return impl_->index->d; }
std::string AnnIndex::factory() const { return impl_->factory; }

void AnnIndex::train(const at::Tensor& sample) {
  detail::check_matrix(sample, dim(), "training vectors");
  if (is_trained()) return;
  at::Tensor x = sample;
  if (impl_->train_size > 0 && x.size(0) > impl_->train_size) {
    auto gen = at::detail::createCPUGenerator(1234);
    x = x.index_select(0, at::randperm(x.size(0), gen, at::kLong).slice(0, 0, impl_->train_size)).contiguous();
  }
  int64_t needed = impl_->ivf ? int64_t(impl_->ivf->nlist) : 1;
  if (auto* pq = dynamic_cast<const faiss::IndexIVFPQ*>(impl_->ivf)) needed = std::max<int64_t>(needed, pq->pq.ksub);
  if (x.size(0) < needed)
    throw Error("", impl_->factory + " needs at least " + std::to_string(needed) + " training vectors, got " +
                        std::to_string(x.size(0)), "give more vectors or use the flat or hnsw recipe");
  try {
    impl_->index->train(x.size(0), x.data_ptr<float>());
  } catch (const std::exception& e) {
    throw Error("", "training " + impl_->factory + " failed: " + e.what());
  }
}

void AnnIndex::add(const at::Tensor& vectors, const at::Tensor& ids) {
  detail::check_matrix(vectors, dim(), "vectors to add");
  const int64_t n = vectors.size(0);
  if (!ids.defined() || ids.dim() != 1 || ids.size(0) != n || ids.scalar_type() != at::kLong || !ids.device().is_cpu())
    throw Error("", "ids must be a CPU int64 vector with one id per row (" + std::to_string(n) + ")");
  if (!is_trained()) throw Error("", impl_->factory + " must be trained before adding", "call train() first");
  if (on_disk()) throw Error("", "the inverted lists of this index are mapped read-only from disk", "add a slice instead");
  if (n == 0) return;
  const at::Tensor id = ids.contiguous();
  if (id.min().item<int64_t>() < 0) throw Error("", "ids must be ≥ 0 (−1 marks a missing result)");
  try {
    impl_->index->add_with_ids(n, vectors.data_ptr<float>(), id.data_ptr<int64_t>());
  } catch (const std::exception& e) {
    throw Error("", "adding to " + impl_->factory + " failed: " + e.what());
  }
}

KnnResult AnnIndex::search(const at::Tensor& queries, int k) const {
  detail::check_matrix(queries, dim(), "queries");
  if (k < 1) throw Error("", "k must be ≥ 1, got " + std::to_string(k));
  const int64_t q = queries.size(0);
  KnnResult r{at::full({q, k}, -1, at::kLong),
              at::full({q, k}, -std::numeric_limits<float>::infinity(), at::kFloat)};
  // FAISS is only asked for as many as it holds, so padding is ours and uniform.
  const int64_t kk = std::min<int64_t>(k, size());
  if (q == 0 || kk == 0) return r;
  at::Tensor ids = kk == k ? r.indices : at::empty({q, kk}, at::kLong);
  at::Tensor sims = kk == k ? r.similarities : at::empty({q, kk}, at::kFloat);
  try {
    impl_->index->search(q, queries.data_ptr<float>(), kk, sims.data_ptr<float>(), ids.data_ptr<int64_t>());
  } catch (const std::exception& e) {
    throw Error("", "searching " + impl_->factory + " failed: " + e.what());
  }
  if (impl_->l2()) sims.neg_();  // similarity = −squared distance, so best is still largest
  sims.masked_fill_(ids.lt(0), -std::numeric_limits<float>::infinity());
  if (kk != k) {
    r.indices.narrow(1, 0, kk).copy_(ids);
    r.similarities.narrow(1, 0, kk).copy_(sims);
  }
  return r;
}

bool AnnIndex::is_ivf() const { return impl_->ivf != nullptr; }
bool AnnIndex::on_disk() const {
  return impl_->ivf && dynamic_cast<const faiss::OnDiskInvertedLists*>(impl_->ivf->invlists) != nullptr;
}

std::vector<std::string> AnnIndex::tunable_parameters() const {
  if (impl_->ivf) return {"nprobe"};
  if (impl_->hnsw) return {"efSearch"};
  return {};
}

std::vector<double> AnnIndex::tuning_sweep() const {
  std::vector<double> v;
  if (impl_->ivf) {
    const int64_t nlist = int64_t(impl_->ivf->nlist);
    for (int64_t p = 1; p < nlist; p *= 2) v.push_back(double(p));
    v.push_back(double(nlist));
  } else if (impl_->hnsw) {
    for (int e = 16; e <= 1024; e *= 2) v.push_back(e);
  }
  return v;
}

void AnnIndex::set_search_params(const std::map<std::string, double>& params) {
  const auto names = tunable_parameters();
  for (const auto& [name, value] : params) {
    if (std::find(names.begin(), names.end(), name) == names.end())
      throw Error("", "index " + impl_->factory + " has no search parameter '" + name + "'",
                  names.empty() ? "it has none to set" : "use " + names[0]);
    if (!(value >= 1 && value <= (1 << 20)) || value != std::floor(value))
      throw Error("", "search parameter " + name + " must be a whole number in [1, 1048576]");
  }
  // ParameterSpace reaches the core through IndexIDMap(2) and IndexPreTransform; it throws
  // for a name the index lacks, which the check above has ruled out.
  const faiss::ParameterSpace space;
  for (const auto& [name, value] : params) {
    try {
      space.set_index_parameter(impl_->index.get(), name, value);
    } catch (const std::exception& e) {
      throw Error("", "cannot set " + name + " on " + impl_->factory + ": " + e.what());
    }
  }
}

std::map<std::string, double> AnnIndex::search_params() const {
  std::map<std::string, double> p;
  if (impl_->ivf) p["nprobe"] = double(impl_->ivf->nprobe);
  if (impl_->hnsw) p["efSearch"] = double(impl_->hnsw->hnsw.efSearch);
  return p;
}

void AnnIndex::write(const std::string& path) const {
  write_atomically(path, [&](const std::string& tmp) {
    try {
      faiss::write_index(impl_->index.get(), tmp.c_str());
    } catch (const std::exception& e) {
      throw Error(path, std::string("cannot write index: ") + e.what(), "check free disk space and permissions");
    }
  });
}


void check_file(const CheckedFile& f, const std::string& fix) {
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(f.path, ec);
  if (ec) throw Error(f.path, "cannot read index file: " + ec.message(), fix);
  if (f.bytes < 0 || f.xxh3.empty())
    throw Error(f.path, "no expected size and hash to check the index file against", fix);
  if (int64_t(bytes) != f.bytes)
    throw Error(f.path, "index file has " + std::to_string(bytes) + " bytes, expected " +
                            std::to_string(f.bytes) + " (truncated or replaced)", fix);
  if (hash_file(f.path) != f.xxh3)
    throw Error(f.path, "index file contents differ from the expected hash (corrupt or replaced)", fix);
}

AnnIndex AnnIndex::read(const std::string& path, int64_t expected_bytes, const std::string& expected_hash) {
  const std::string fix = "rebuild the index";
  check_file({path, expected_bytes, expected_hash}, fix);
  std::unique_ptr<faiss::Index> idx;
  try {
    idx.reset(detail::with_quiet_stdout([&] {
      return faiss::read_index(path.c_str(), faiss::IO_FLAG_ONDISK_SAME_DIR | faiss::IO_FLAG_READ_ONLY);
    }));
  } catch (const std::exception& e) {
    throw Error(path, std::string("not a readable FAISS index: ") + e.what(), fix);
  }
  // Mapped lists past the end of a truncated .ivfdata would fault (SIGBUS) on first touch.
  if (auto* ivf = faiss::ivflib::try_extract_index_ivf(idx.get())) {
    if (auto* od = dynamic_cast<faiss::OnDiskInvertedLists*>(ivf->invlists)) {
      std::error_code ec;
      const auto have = std::filesystem::file_size(od->filename, ec);
      if (ec || have < od->totsize)
        throw Error(od->filename, "inverted lists file is shorter than the index says (truncated)", fix);
    }
  }
  if (!idx || idx->d < 1) throw Error(path, "not a usable FAISS index", fix);
  if (!has_stable_ids(idx.get()))
    throw Error(path, "index keeps no stable ids (not id-mapped and not IVF)", fix);
  AnnIndex out;
  out.impl_ = std::make_unique<Impl>();
  out.impl_->factory = describe(idx.get());
  out.impl_->index = std::move(idx);
  out.impl_->find_core();
  return out;
}

bool AnnIndex::supports_range_search() const {
  const faiss::Index* core = core_of(impl_->index.get());
  return dynamic_cast<const faiss::IndexFlat*>(core) || dynamic_cast<const faiss::IndexIVF*>(core);
}

AnnIndex::RangeResult AnnIndex::range_search(const at::Tensor& queries, float min_similarity) const {
  detail::check_matrix(queries, dim(), "queries");
  if (!supports_range_search())
    throw Error("", impl_->factory + " has no range search in this FAISS", "use search() with a score cut");
  const int64_t q = queries.size(0);
  faiss::RangeSearchResult res(q);  // lims zeroed: an empty answer when nothing is searched
  // FAISS keeps IP scores above the radius and L2 distances below it; unit rows have
  // |x − y|² = 2 − 2·cos(x, y).
  const float radius = impl_->l2() ? 2.f - 2.f * min_similarity : min_similarity;
  if (q > 0 && size() > 0) {
    try {
      impl_->index->range_search(q, queries.data_ptr<float>(), radius, &res);
    } catch (const std::exception& e) {
      throw Error("", "range search on " + impl_->factory + " failed: " + e.what());
    }
  }
  const int64_t total = int64_t(res.lims[q]);
  RangeResult r{at::empty({q + 1}, at::kLong), at::empty({total}, at::kLong), at::empty({total}, at::kFloat)};
  std::copy(res.lims, res.lims + q + 1, r.lims.data_ptr<int64_t>());
  std::copy(res.labels, res.labels + total, r.ids.data_ptr<int64_t>());
  float* sims = r.similarities.data_ptr<float>();
  std::copy(res.distances, res.distances + total, sims);
  if (impl_->l2())
    for (int64_t i = 0; i < total; ++i) sims[i] = 1.f - sims[i] / 2.f;
  return r;
}

}  // namespace invp::index
