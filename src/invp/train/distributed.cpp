#include <invp/core/error.h>
#include <invp/train/distributed.h>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>

namespace invp::train {

struct DistGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
};

namespace {
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
double bytes_of(const torch::Tensor& t) { return double(t.numel()) * double(t.element_size()); }

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}
}  // namespace

std::vector<std::string> distributed_backends() {
#ifdef USE_C10D_NCCL
  return {"gloo", "nccl"};
#else
  return {"gloo"};
#endif
}

int per_rank_batch(int global_batch, int world) {
  if (world < 1 || global_batch % world != 0 || global_batch / world < 1)
    throw Error("", "--batch-size " + std::to_string(global_batch) + " is the global batch and must split evenly over " +
                        std::to_string(world) + " ranks",
                "use a multiple of " + std::to_string(world));
  return global_batch / world;
}

template <class F>
void DistGroup::checked(const std::string& what, F f) {
  try {
    f();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    throw Error("", "rank " + std::to_string(rank_) + " of " + std::to_string(world_) + ": " + what +
                        " failed: " + msg,
                "a peer rank died, hung or could not be reached; rerun the same command to resume from the last "
                "checkpoint");
  }
}

std::shared_ptr<DistGroup> DistGroup::connect(const RankEnv& env, std::chrono::seconds timeout, bool cuda) {
  std::shared_ptr<DistGroup> g(new DistGroup());
  g->impl_ = std::make_unique<Impl>();
  g->rank_ = env.rank;
  g->world_ = env.world;
#ifndef USE_C10D_NCCL
  if (cuda)
    throw Error("", "distributed training on CUDA needs NCCL, and this LibTorch was built without it",
                "use a CUDA LibTorch with NCCL, or --device cpu (Gloo)");
#endif
  g->backend_ = cuda ? "nccl" : "gloo";
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
  g->checked("joining the job at " + env.master_addr + ":" + std::to_string(env.master_port), [&] {
    c10d::TCPStoreOptions so;
    so.port = uint16_t(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = size_t(env.world);
    so.waitWorkers = true;
    so.timeout = ms;
    g->impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
#ifdef USE_C10D_NCCL
    if (cuda) {
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = ms;
      g->impl_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(g->impl_->store, env.rank, env.world, o);
      return;
    }
#endif
    auto o = c10d::ProcessGroupGloo::Options::create(ms);
    // The interface Gloo binds: GLOO_SOCKET_IFNAME as in PyTorch, loopback for a job on this
    // machine, else the address this host's name resolves to.
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (is_loopback(env.master_addr))
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    o->threads = 2;
    g->impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(g->impl_->store, env.rank, env.world, o);
  });
  return g;
}

DistGroup::~DistGroup() = default;

void DistGroup::broadcast(std::vector<torch::Tensor>& ts, int root) {
  auto t0 = std::chrono::steady_clock::now();
  checked("broadcast", [&] {
    for (auto& t : ts) {
      std::vector<at::Tensor> v{t};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      impl_->pg->broadcast(v, o)->wait();
      stats_.broadcast_bytes += bytes_of(t);
    }
  });
  stats_.broadcast_seconds += seconds_since(t0);
}

void DistGroup::broadcast(torch::Tensor& t, int root) {
  std::vector<torch::Tensor> v{t};
  broadcast(v, root);
}

void DistGroup::broadcast_bytes(std::string& bytes, int root) {
  auto n = torch::tensor({int64_t(bytes.size())}, torch::kLong);
  broadcast(n, root);
  auto buf = torch::empty({n.item<int64_t>()}, torch::kUInt8);
  if (rank_ == root) std::memcpy(buf.data_ptr(), bytes.data(), bytes.size());
  if (buf.numel() > 0) broadcast(buf, root);
  bytes.assign(reinterpret_cast<const char*>(buf.data_ptr()), size_t(buf.numel()));
}

void DistGroup::allreduce_sum(torch::Tensor& t) { allreduce_sum_async(t).wait(); }

DistGroup::Pending DistGroup::allreduce_sum_async(torch::Tensor& t) {
  auto t0 = std::chrono::steady_clock::now();
  c10::intrusive_ptr<c10d::Work> work;
  checked("allreduce", [&] {
    std::vector<at::Tensor> v{t};
    work = impl_->pg->allreduce(v);
  });
  stats_.allreduce_bytes += bytes_of(t);
  stats_.allreduce_seconds += seconds_since(t0);
  return {[this, work] {
    auto t1 = std::chrono::steady_clock::now();
    checked("allreduce", [&] { work->wait(); });
    stats_.allreduce_seconds += seconds_since(t1);
  }};
}

torch::Tensor DistGroup::all_gather(const torch::Tensor& t) {
  auto t0 = std::chrono::steady_clock::now();
  auto in = t.contiguous();
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < world_; ++r) out[0].push_back(torch::empty_like(in));
  checked("all-gather", [&] {
    std::vector<at::Tensor> v{in};
    impl_->pg->allgather(out, v)->wait();
  });
  stats_.allgather_bytes += bytes_of(in) * world_;
  stats_.allgather_seconds += seconds_since(t0);
  return torch::cat(out[0], 0);
}

void DistGroup::barrier() {
  checked("barrier", [&] { impl_->pg->barrier()->wait(); });
}

}  // namespace invp::train
