// Ranks: where this process sits in a group of processes that share one job, read from the
// environment a launcher sets (the torchrun contract, or Slurm's), and a launcher for N ranks
// on this machine (`--nproc N`). The ranks talk through LibTorch's c10d (train/distributed.h);
// nothing here opens a connection.
#pragma once
#include <string>
#include <vector>

namespace invp {

struct RankEnv {
  int rank = 0;        // 0..world−1
  int world = 1;       // number of ranks
  int local_rank = 0;  // rank on this machine (picks the GPU)
  std::string master_addr;  // host of rank 0's TCPStore
  int master_port = 0;
  std::string launcher;     // "torchrun" (RANK/WORLD_SIZE/…), "slurm", or "" for one process
  bool distributed() const { return world > 1; }
};

// From RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (torchrun, `invp … --nproc`),
// else SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID with MASTER_ADDR and MASTER_PORT set by the
// job script; a lone process otherwise. A distributed environment without a master address or
// port, or with a rank outside [0, world), throws invp::Error naming the variable.
RankEnv rank_env_from_environment();

// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice).
int free_local_port();

// Runs `ranks` copies of this program (/proc/self/exe) with `args` (argv without argv[0] and
// without the --nproc option) as ranks 0..ranks−1 of one job on this machine:
// RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT a free port,
// and `--threads threads_per_rank` in place of any --threads given. Each line a rank prints is
// prefixed with "[rank i] "; SIGINT/SIGTERM are passed on to every rank; when a rank fails, the
// others get SIGTERM, then SIGKILL after `grace_seconds`. Returns 0 when every rank exits 0,
// else the first failure's exit code (128 + signal for a rank killed by a signal).
int run_local_ranks(int ranks, const std::vector<std::string>& args, int threads_per_rank,
                    int grace_seconds = 30);

// `args` without the option `name` and its value (`name V` or `name=V`).
std::vector<std::string> drop_option(const std::vector<std::string>& args, const std::string& name);

}  // namespace invp
