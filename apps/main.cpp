// The `invp` binary: parses options, sets the thread budget, dispatches to subcommands and
// turns errors into one line (exit 1; usage errors exit 2).
#include "common.h"

#include <invp/core/cpu_features.h>
#include <invp/core/error.h>
#include <invp/core/launch.h>
#include <invp/core/log.h>
#include <invp/core/threads.h>
#include <invp/core/version.h>
#include <invp/data/library_info.h>
#include <invp/graph/knn_graph.h>
#include <invp/index/library_info.h>
#include <invp/search/filter.h>
#include <invp/store/library_info.h>
#include <invp/train/distributed.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace invp::app {
Globals& globals() {
  static Globals g;
  return g;
}

namespace {
std::string number_text(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}
}  // namespace

CLI::Validator at_least(double lo) {
  return CLI::Validator(
      [lo](std::string& v) {
        double x = 0;
        return CLI::detail::lexical_cast(v, x) && x >= lo ? std::string() : "must be at least " + number_text(lo);
      },
      "");
}

CLI::Validator filter_expression() {
  return CLI::Validator(
      [](std::string& v) {
        try {
          search::Filter::parse(v);
          return std::string();
        } catch (const std::exception& e) {
          return std::string(e.what());
        }
      },
      "");
}

CLI::Validator between(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) {
        double x = 0;
        return CLI::detail::lexical_cast(v, x) && x >= lo && x <= hi
                   ? std::string()
                   : "must be between " + number_text(lo) + " and " + number_text(hi);
      },
      "");
}

int relaunch_as_ranks(int nproc) {
  if (nproc <= 1 || rank_env_from_environment().distributed()) return -1;
  const int per_rank = std::max(1, thread_budget() / nproc);
  log::info("launching " + std::to_string(nproc) + " ranks on this machine, " + std::to_string(per_rank) +
            " thread(s) each");
  return run_local_ranks(nproc, drop_option(globals().args, "--nproc"), per_rank);
}
}  // namespace invp::app

namespace {
std::string backends() {
  std::string s;
  for (const auto& b : invp::train::distributed_backends()) s += (s.empty() ? "" : ", ") + b;
  return s;
}

void print_version() {
  std::cout << "invp " << invp::version() << "\n"
            << "  LibTorch " << invp::torch_version() << "\n"
            << "  CUDA     " << invp::cuda_report() << "\n"
            << "  FAISS    " << invp::index::faiss_version()
            << (invp::graph::KnnGraph::faiss_gpu_built() ? " + GPU kNN search (bfKnn, built from source)" : "") << "\n"
            << "  OpenCV   " << invp::data::opencv_version() << "\n"
            << "  HDF5     " << invp::store::hdf5_version() << "\n"
            << "  BLAS     " << invp::loaded_blas() << "\n"
            << "  bf16     " << invp::cpu_bf16_report() << "\n"
            << "  c10d     " << backends() << " (data-parallel training: --nproc N, torchrun or srun)\n"
            << "  threads  " << invp::thread_report() << "\n";
}
}  // namespace

int main(int argc, char** argv) {
  using invp::app::globals;
  CLI::App app{
      "invp: learn image embeddings without labels (Invariance Propagation) and search image "
      "collections.\nSOURCE is an IDX file or folder (e.g. /usr/share/datasets/fashion-mnist, "
      "':test' picks the test split), CIFAR *.bin batches, an image folder, a list file, or '-'."};
  app.require_subcommand(0, 1);
  app.set_config("--config", "", "TOML config file (keys under [section] per subcommand)");
  app.allow_config_extras(CLI::config_extras_mode::error);
  bool show_version = false;
  app.add_flag("--version", show_version, "Print versions of invp, its libraries, BLAS and threads");
  app.add_option("--threads", globals().threads,
                 "Thread budget shared by LibTorch, OpenMP/FAISS, OpenBLAS and loader workers "
                 "(default: cores)")
      ->envname("INVP_THREADS")->check(invp::app::at_least(0));
  app.add_option("--seed", globals().seed, "Random seed (augmentation, shuffling, init)")
      ->envname("INVP_SEED");
  app.add_flag("-q,--quiet", globals().quiet, "Only warnings and errors on stderr");
  app.add_flag("--json", globals().json, "Machine-readable JSON results on stdout");
  invp::app::add_data_commands(app);
  invp::app::add_train_command(app);
  invp::app::add_embed_commands(app);
  invp::app::add_query_commands(app);
  invp::app::add_serve_command(app);
  invp::app::add_eval_commands(app);
  invp::app::add_dedup_command(app);
  invp::app::add_demo_command(app);
  for (auto* sub : app.get_subcommands({})) sub->fallthrough();

  for (int i = 1; i < argc; ++i) globals().args.push_back(argv[i]);
  try {
    app.parse(argc, argv);
    // Ranks other than 0 of a data-parallel job keep their warnings and errors, not their logs.
    const auto rank = invp::rank_env_from_environment();
    invp::log::set_quiet(globals().quiet || rank.rank != 0);
    invp::apply_thread_budget(invp::resolve_thread_budget(globals().threads));
    if (show_version) {
      print_version();
      return 0;
    }
    if (!globals().action) {
      std::cout << app.help();
      return 0;
    }
    globals().action();
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  } catch (const std::exception& e) {  // invp::Error and anything else: one line, exit 1
    std::fprintf(stderr, "invp: error: %s\n", e.what());
    // Leave without running library destructors: HDF5 1.10.8 segfaults at exit when a file
    // failed to close (seen on a full disk). Every output is already complete or discarded
    // (atomic writes), so nothing is lost by skipping them.
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(1);
  }
  return 0;
}
