// The phases of a training epoch (trainer_state.h), single-process and data-parallel.
#include <invp/core/clock.h>
#include <invp/core/error.h>
#include <invp/core/hash.h>
#include <invp/eval/weighted_knn.h>
#include <invp/graph/propagate.h>
#include <invp/model/precision.h>
#include <invp/train/grad_buckets.h>
#include <invp/train/graphed_step.h>
#include <invp/train/sgd_step.h>
#include <invp/train/trainer_state.h>

#include <algorithm>
#include <chrono>

namespace invp::train {
using model::normalise_rows;

std::pair<int64_t, int64_t> row_slice(int64_t n, int rank, int world) {
  const int64_t per = (n + world - 1) / world;
  const int64_t begin = std::min(n, per * rank);
  return {begin, std::min(n, begin + per)};
}

void for_each_eval_batch(model::Encoder& net, const data::LoaderOptions& train_opts, torch::Device device, bool bf16,
                         const std::shared_ptr<data::Dataset>& ds,
                         const std::function<void(const data::Batch&, const torch::Tensor&)>& take) {
  net->eval();
  torch::NoGradGuard ng;
  auto lo = train_opts;
  lo.shuffle = false;
  lo.drop_last = false;
  lo.shard = 0;
  lo.shards = 1;
  lo.augment = data::eval_config(train_opts.augment);
  data::Loader loader(ds, lo);
  loader.start_epoch(1);
  while (auto b = loader.next())
    take(*b, normalise_rows(model::forward(*net, b->images.to(device, true), bf16)));
}

torch::Tensor Trainer::State::to_device(const torch::Tensor& t) const {
  if (!device.is_cuda()) return t;
  return (t.is_pinned() ? t : t.pin_memory()).to(device, /*non_blocking=*/true);
}

torch::Tensor Trainer::State::gather_row_slices(const torch::Tensor& part, int64_t n) {
  // Equal shapes for the all-gather: every slice padded to the first one's length.
  const int64_t per = row_slice(n, 0, world()).second;
  auto padded = part;
  if (part.size(0) < per) {
    auto sizes = part.sizes().vec();
    sizes[0] = per - part.size(0);
    padded = torch::cat({part, torch::zeros(sizes, part.options())});
  }
  auto all = dist->all_gather(padded);
  std::vector<torch::Tensor> rows;
  for (int r = 0; r < world(); ++r) {
    auto [b, e] = row_slice(n, r, world());
    rows.push_back(all.slice(0, r * per, r * per + (e - b)));
  }
  return torch::cat(rows);
}

torch::Tensor Trainer::State::graph_rows(EpochMetrics& m) {
  auto rows = bank->data();
  if (modes.graph_features != GraphFeatures::Recomputed) return rows;
  auto t = std::chrono::steady_clock::now();
  const int64_t n = rows.size(0);
  auto [begin, end] = dist ? row_slice(n, dist->rank(), world()) : std::pair<int64_t, int64_t>{0, n};
  auto part = rows.slice(0, begin, end).clone();  // an item the loader skips keeps its bank row
  auto slice = dist ? data::subset(ds, size_t(begin), size_t(end - begin)) : ds;
  // Part of the training arithmetic: in the run's precision (the monitor is not).
  for_each_eval_batch(net, loader_opts, device, bf16, slice, [&](const data::Batch& b, const torch::Tensor& z) {
    part.index_copy_(0, b.indices.to(device), z);
  });
  m.graph_features_seconds = seconds_since(t);
  return dist ? gather_row_slices(part, n) : part;
}

void Trainer::State::rebuild_graph(EpochMetrics& m, bool use_invariance) {
  // The recomputed features are only worth their forward pass once L_inv reads the graph.
  auto rows = use_invariance ? graph_rows(m) : bank->data();
  auto t = std::chrono::steady_clock::now();
  const int k = cfg.knn;
  if (!dist) {
    graph = modes.graph_search == GraphSearch::Ivf ? graph::KnnGraph::build_ivf(rows, k, cfg.graph_probes, cfg.seed)
                                                   : graph::KnnGraph::build(rows, k);
  } else if (modes.graph_search == GraphSearch::Exact) {
    // Each rank searches its slice of the rows against all of them; the slices are gathered.
    const int64_t n = rows.size(0);
    auto [begin, end] = row_slice(n, dist->rank(), world());
    auto part = graph::KnnGraph::build_rows(rows, k, begin, end);
    graph.neighbors = gather_row_slices(part.neighbors, n);
    graph.similarities = gather_row_slices(part.similarities, n);
  } else {
    // IVF: rank 0 builds (k-means and search) and every rank takes its graph.
    if (lead()) graph = graph::KnnGraph::build_ivf(rows, k, cfg.graph_probes, cfg.seed);
    else graph.neighbors = torch::empty({rows.size(0), k}, torch::kLong), graph.similarities = torch::empty({rows.size(0), k});
    std::vector<torch::Tensor> lists{graph.neighbors, graph.similarities};
    dist->broadcast(lists);
  }
  m.graph_seconds = seconds_since(t);
  auto st = graph.stats(labels);
  m.graph_mean_similarity = st.mean_similarity;
  m.graph_mutual = st.mutual_share;
  m.graph_same_label = st.same_label_share;
}

torch::Tensor Trainer::State::train_step(const data::Batch& batch, const LossConfig& loss_cfg_step, double inv_weight,
                                         torch::Tensor& sums, bool& stop, EpochMetrics& m) {
  // On a GPU the step queues work without waiting for it (no .item(), no blocking copies), so
  // host-side phase times are launch times; --profile waits at each phase boundary instead.
  const bool cuda = device.is_cuda();
  auto phase_end = [&] {
    if (cuda_profile()) torch::cuda::synchronize();
  };
  auto t1 = std::chrono::steady_clock::now();
  auto ids = to_device(batch.indices);
  // The graphed step takes the pinned batch itself (one copy into its static input).
  auto pinned = [](const torch::Tensor& t) { return t.is_pinned() ? t : t.pin_memory(); };
  auto z = graphed ? graphed->forward(pinned(batch.images))
                   : normalise_rows(model::forward(*net, to_device(batch.images), bf16));
  auto zl = graphed ? z.detach().requires_grad_(true) : z;  // the loss's leaf when graphed
  phase_end();
  m.forward += seconds_since(t1);

  auto t2 = std::chrono::steady_clock::now();
  torch::Tensor propagated;  // built on the host from the host-side graph
  if (loss_cfg_step.use_invariance) {
    propagated = graph::propagate(graph, batch.indices, cfg.hops,
                                  modes.propagation == Propagation::Concat ? graph::PropagationMode::Concat
                                                                           : graph::PropagationMode::Bfs);
    if (modes.positives == Positives::Oracle) propagated = graph::keep_same_label(propagated, batch.indices, labels);
    propagated = to_device(propagated);
  }
  auto loss = invariance_loss(zl, bank->data(), ids, propagated, inv_weight, loss_cfg_step);
  phase_end();
  m.method += seconds_since(t2);

  auto t3 = std::chrono::steady_clock::now();
  if (graphed) {
    graphed->backward_and_step(torch::autograd::grad({loss.total}, {zl})[0]);
  } else {
    opt->zero_grad();
    if (dist) {
      if (!buckets) buckets = std::make_unique<GradientBuckets>(dist, net->parameters(), cfg.grad_overlap);
      buckets->prepare(stop);
    }
    loss.total.backward();  // with overlap, buckets' allreduces start from its hooks
    phase_end();
    m.backward += seconds_since(t3);
    if (dist) {
      auto tc = std::chrono::steady_clock::now();
      stop = buckets->finish();
      m.allreduce += seconds_since(tc);
      m.grad_buckets = int64_t(buckets->buckets());
      m.buckets_in_backward = int64_t(buckets->started_early());
    }
    t3 = std::chrono::steady_clock::now();
    if (!(cuda && foreach_sgd_step(*opt))) opt->step();  // the GPU takes the fused step
  }
  phase_end();
  m.backward += seconds_since(t3);
  const double n = double(batch.indices.size(0));
  sums += torch::stack({loss.total, loss.instance, loss.invariance}).detach().to(torch::kDouble) * n;
  return z.detach();
}

void Trainer::State::update_bank(const data::Batch& batch, const torch::Tensor& zd, EpochMetrics& m) {
  auto t = std::chrono::steady_clock::now();
  auto ids = to_device(batch.indices);
  auto all_ids = ids, all_z = zd;
  if (dist) {  // every rank applies every rank's pairs, in rank order: the banks stay identical
    all_ids = dist->all_gather(ids);
    all_z = dist->all_gather(zd);
    m.allgather += seconds_since(t);
  }
  if (modes.graph == GraphMode::Online) {  // reference: the batch's rows from this step's top-k
    auto sims = torch::mm(zd, bank->data().t());
    sims.scatter_(1, ids.unsqueeze(1), -1e9);  // self excluded
    auto nbrs = std::get<1>(sims.topk(cfg.knn, 1));
    if (dist) nbrs = dist->all_gather(nbrs);
    graph.update_rows(all_ids.cpu(), nbrs.cpu());
  }
  bank->update(all_ids, all_z, cfg.bank_momentum);
  if (cuda_profile()) torch::cuda::synchronize();
  m.method += seconds_since(t);
}

void Trainer::State::epoch_end(EpochMetrics& m, torch::Tensor sums, int64_t images) {
  auto totals = torch::cat({sums.cpu(), torch::full({1}, double(images), torch::kDouble)});  // waits for the GPU
  if (dist) dist->allreduce_sum(totals);
  images = int64_t(totals[3].item<double>());
  m.loss = totals[0].item<double>(), m.instance = totals[1].item<double>(), m.invariance = totals[2].item<double>();
  if (images > 0) m.loss /= images, m.instance /= images, m.invariance /= images;
  m.images = images;
  if (dist) {
    // The ranks must hold the same bank and graph; a difference is a bug, and training on would
    // only hide it.
    auto b = bank->data().cpu().contiguous(), g = graph.neighbors.contiguous();
    auto h = hash_bytes(b.data_ptr(), size_t(b.numel()) * sizeof(float)) +
             hash_bytes(g.data_ptr(), size_t(g.numel()) * sizeof(int64_t));
    auto mine = torch::from_blob(h.data(), {int64_t(h.size())}, torch::kUInt8).clone();
    auto all = dist->all_gather(mine.unsqueeze(0));
    for (int r = 1; r < world(); ++r)
      if (!torch::equal(all[r], all[0]))
        throw Error(out, "ranks diverged at epoch " + std::to_string(m.epoch) + ": rank " + std::to_string(r) +
                             "'s memory bank or graph differs from rank 0's",
                    "this is a bug; rerun resumes from the last checkpoint");
    m.state_hash = h;
  }
  if (lead() && test_ds && cfg.knn_every > 0 && m.epoch % cfg.knn_every == 0 && labels.max().item<int64_t>() >= 0) {
    std::vector<torch::Tensor> feats, labs;
    for_each_eval_batch(net, loader_opts, device, /*bf16=*/false, test_ds, [&](const data::Batch& b, const torch::Tensor& z) {
      feats.push_back(z);
      labs.push_back(b.labels);
    });
    auto acc = eval::weighted_knn(bank->data().cpu(), labels, torch::cat(feats).cpu(), torch::cat(labs));
    m.knn_top1 = acc.top1;
    m.knn_top5 = acc.top5;
  }
}

}  // namespace invp::train
