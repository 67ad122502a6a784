// TOML config files as `invp --config` reads them (CLI11's parser, applied to options of
// the kinds invp declares, with misspelt keys as errors).
#include <CLI/CLI.hpp>

#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto p = invp::fuzz::temp_file("config.toml", data, size);
  CLI::App app;
  app.set_config("--config");
  app.allow_config_extras(CLI::config_extras_mode::error);
  auto* train = app.add_subcommand("train");
  train->fallthrough();
  std::string s;
  int i = 0;
  double d = 0;
  std::vector<int64_t> v;
  train->add_option("--data", s);
  train->add_option("--epochs", i);
  train->add_option("--lr", d);
  train->add_option("--ids", v);
  std::vector<std::string> args{"fuzz", "--config", p, "train"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  try {
    app.parse(int(argv.size()), argv.data());
  } catch (const CLI::Error&) {
  }
  return 0;
}
