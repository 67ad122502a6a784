// Thread policy: one budget for LibTorch's intra-op pool, OpenMP (FAISS, OpenBLAS-OpenMP)
// and OpenBLAS, so nothing oversubscribes the cores. Call apply_thread_budget() first in
// main; loader workers count against the same budget (see loader_workers()).
#pragma once
#include <string>

namespace invp {

// Budget from the flag (if > 0), else $INVP_THREADS, else the number of cores.
int resolve_thread_budget(int flag_value);
// Sets torch intra-op/inter-op, omp_set_num_threads and openblas_set_num_threads.
void apply_thread_budget(int threads);
int thread_budget();
// Human-readable thread settings and the BLAS library actually loaded.
std::string thread_report();
std::string loaded_blas();

}  // namespace invp
