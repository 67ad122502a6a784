// Command-line walking shared by the bench_* programs:
//   for (BenchArgs a(argc, argv); a.next();)
//     if (a.is("--threads")) threads = std::stoi(a.value());
//     else files.push_back(a.arg());
#pragma once
#include <stdexcept>
#include <string>

class BenchArgs {
 public:
  BenchArgs(int argc, char** argv) : argc_(argc), argv_(argv) {}
  bool next() { return ++i_ < argc_ && (arg_ = argv_[i_], true); }
  const std::string& arg() const { return arg_; }
  bool is(const char* flag) const { return arg_ == flag; }
  // The value after the current flag; throws when the flag ends the command line.
  std::string value() {
    if (i_ + 1 >= argc_) throw std::runtime_error(arg_ + " needs a value");
    return argv_[++i_];
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
  std::string arg_;
};
