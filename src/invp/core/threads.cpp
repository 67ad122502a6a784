#include <invp/core/threads.h>

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace invp {
namespace {
std::atomic<int> g_budget{0};
}

int resolve_thread_budget(int flag_value) {
  if (flag_value > 0) return flag_value;
  if (const char* env = std::getenv("INVP_THREADS")) {
    int v = std::atoi(env);
    if (v > 0) return v;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? int(hw) : 1;
}

void apply_thread_budget(int threads) {
  g_budget = threads;
  at::set_num_threads(threads);  // also sets the OpenMP default in Debian's LibTorch
  static bool interop_set = false;  // may only be set once per process
  if (!interop_set) {
    interop_set = true;
    try { at::set_num_interop_threads(1); } catch (...) {}
  }
  omp_set_num_threads(threads);
  // OpenBLAS is reached through libblas.so.3; look the setter up rather than link it.
  using SetFn = void (*)(int);
  if (auto fn = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    fn(threads);
}

int thread_budget() { return g_budget > 0 ? g_budget.load() : resolve_thread_budget(0); }

std::string loaded_blas() {
  // The real file behind libblas.so.3 tells which alternative Debian selected.
  std::ifstream maps("/proc/self/maps");
  std::string line, found;
  while (std::getline(maps, line)) {
    auto pos = line.find('/');
    if (pos == std::string::npos) continue;
    std::string path = line.substr(pos);
    if (path.find("blas") != std::string::npos && path.find(".so") != std::string::npos) {
      found = path;
      if (path.find("openblas") != std::string::npos) break;
    }
  }
  using CfgFn = char* (*)();
  if (auto fn = reinterpret_cast<CfgFn>(dlsym(RTLD_DEFAULT, "openblas_get_config")))
    return std::string(fn()) + " (" + found + ")";
  return found.empty() ? "not loaded" : found;
}

std::string thread_report() {
  std::ostringstream s;
  s << "budget " << thread_budget() << ", torch intra-op " << at::get_num_threads()
    << ", inter-op " << at::get_num_interop_threads() << ", OpenMP max "
    << omp_get_max_threads();
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  s << ", OMP_WAIT_POLICY " << (wait ? wait : "(unset)");
  return s.str();
}

}  // namespace invp
