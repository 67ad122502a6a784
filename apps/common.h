// Shared state of the `invp` command line: global options and output helpers.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace invp::app {
struct Globals {
  int threads = 0;
  uint64_t seed = 0;
  bool quiet = false;
  bool json = false;
  // Set by the chosen subcommand's parse callback; run by main once options are final.
  std::function<void()> action;
  std::vector<std::string> args;  // the command line without argv[0] (for `--nproc` to relaunch)
};
Globals& globals();

void add_data_commands(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_embed_commands(CLI::App& app);  // embed, index build|add|train|merge|info
void add_index_edit_commands(CLI::App* index);  // index remove|compact
void add_query_commands(CLI::App& app);  // query, inspect
void add_serve_command(CLI::App& app);   // serve (HTTP + web page)
void add_eval_commands(CLI::App& app);   // eval knn|retrieval
void add_dedup_command(CLI::App& app);   // dedup (near-duplicates)

// Range checks whose errors read like the rest ("-k: must be at least 1"); CLI11's own print
// the range's limits as long decimals.
CLI::Validator at_least(double lo);
CLI::Validator between(double lo, double hi);
// A --filter expression (search/filter.h): a malformed one is a usage error naming the term.
CLI::Validator filter_expression();

// `--nproc N` on a command that can run as ranks: when N > 1 and this process is not already a
// rank, runs N local ranks of the same command line (core/launch.h) and returns their exit code;
// otherwise returns -1 and the caller runs as itself.
int relaunch_as_ranks(int nproc);
}  // namespace invp::app
