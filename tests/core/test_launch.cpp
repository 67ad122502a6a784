// Rank environments (torchrun's and Slurm's contracts) and the local launcher's argument and port
// helpers. The launcher itself runs in tests/train/test_distributed.cpp and tests/cli/dist.sh.
#include <invp/core/error.h>
#include <invp/core/launch.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace {
// Sets the given variables for the scope of one test and clears the launcher variables around it.
struct Env {
  std::vector<std::string> names = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                                    "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"};
  explicit Env(std::vector<std::pair<const char*, const char*>> vars) {
    for (auto& n : names) ::unsetenv(n.c_str());
    for (auto& [k, v] : vars) ::setenv(k, v, 1);
  }
  ~Env() {
    for (auto& n : names) ::unsetenv(n.c_str());
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const invp::Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(RankEnv, ALoneProcessWithoutLauncherVariables) {
  Env e({});
  auto r = invp::rank_env_from_environment();
  EXPECT_FALSE(r.distributed());
  EXPECT_EQ(r.rank, 0);
  EXPECT_EQ(r.world, 1);
  EXPECT_EQ(r.launcher, "");
}

TEST(RankEnv, TorchrunContract) {
  Env e({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "10.1.2.3"}, {"MASTER_PORT", "29500"}});
  auto r = invp::rank_env_from_environment();
  EXPECT_TRUE(r.distributed());
  EXPECT_EQ(r.rank, 3);
  EXPECT_EQ(r.world, 4);
  EXPECT_EQ(r.local_rank, 1);
  EXPECT_EQ(r.master_addr, "10.1.2.3");
  EXPECT_EQ(r.master_port, 29500);
  EXPECT_EQ(r.launcher, "torchrun");
}

TEST(RankEnv, SlurmWithAnExplicitMaster) {
  Env e({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}, {"MASTER_ADDR", "node7"},
         {"MASTER_PORT", "12345"}});
  auto r = invp::rank_env_from_environment();
  EXPECT_EQ(r.launcher, "slurm");
  EXPECT_EQ(r.rank, 1);
  EXPECT_EQ(r.world, 2);
  EXPECT_EQ(r.master_addr, "node7");
}

TEST(RankEnv, BadEnvironmentsNameTheVariable) {
  {
    Env e({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}});
    EXPECT_NE(error_of([] { invp::rank_env_from_environment(); }).find("MASTER_ADDR is not set"), std::string::npos);
  }
  {
    Env e({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "x"}, {"MASTER_PORT", "1"}});
    EXPECT_NE(error_of([] { invp::rank_env_from_environment(); }).find("RANK=2 is outside [0, WORLD_SIZE=2)"),
              std::string::npos);
  }
  {
    Env e({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "x"}, {"MASTER_PORT", "http"}});
    EXPECT_NE(error_of([] { invp::rank_env_from_environment(); }).find("MASTER_PORT='http'"), std::string::npos);
  }
  {
    Env e({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "x"}});
    EXPECT_NE(error_of([] { invp::rank_env_from_environment(); }).find("MASTER_PORT must be set"), std::string::npos);
  }
}

TEST(Launch, DropOptionRemovesBothSpellings) {
  std::vector<std::string> a = {"train", "--nproc", "2", "--out", "R", "--nproc=3", "--threads", "4"};
  EXPECT_EQ(invp::drop_option(a, "--nproc"), (std::vector<std::string>{"train", "--out", "R", "--threads", "4"}));
  EXPECT_EQ(invp::drop_option(a, "--threads"),
            (std::vector<std::string>{"train", "--nproc", "2", "--out", "R", "--nproc=3"}));
}

TEST(Launch, FreeLocalPortIsAUsablePort) {
  int p = invp::free_local_port();
  EXPECT_GT(p, 0);
  EXPECT_LT(p, 65536);
}
