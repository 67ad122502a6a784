// Shared state of the `invp` command line: global options and output helpers.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>

namespace invp::app {
struct Globals {
  int threads = 0;
  uint64_t seed = 0;
  bool quiet = false;
  bool json = false;
  // Set by the chosen subcommand's parse callback; run by main once options are final.
  std::function<void()> action;
};
Globals& globals();

void add_data_commands(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_embed_commands(CLI::App& app);  // embed, index build|add|info
void add_query_commands(CLI::App& app);  // query, inspect
void add_eval_commands(CLI::App& app);   // eval knn|retrieval
}  // namespace invp::app
