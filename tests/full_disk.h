// A full disk, simulated with a file-size limit (RLIMIT_FSIZE lowered for this process
// only while the writer runs, SIGXFSZ ignored: writes past the limit then fail with EFBIG as
// they would with ENOSPC). The writer must throw an invp::Error that names the target; the
// previous good file must stay byte-for-byte intact, with no temporary file left beside it.
// The writer runs in this process (after fork, a multi-threaded test process can deadlock
// on a lock another thread held, as it did under AddressSanitizer), except with `isolate`:
// HDF5 1.10.8 keeps a file whose close failed and crashes on it at exit, so HDF5 writers
// run in a forked child that leaves with _Exit (the CLI also leaves with _Exit on errors).
#pragma once
#include <invp/core/error.h>

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>

namespace invp::test {

inline std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// "" when write() threw an invp::Error naming target under the limit, else what happened.
inline std::string write_under_limit(const std::filesystem::path& target,
                                     const std::function<void()>& write, long limit_bytes) {
  struct rlimit old {};
  if (::getrlimit(RLIMIT_FSIZE, &old) != 0) return "getrlimit failed";
  struct rlimit small = old;
  small.rlim_cur = rlim_t(limit_bytes);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  if (::setrlimit(RLIMIT_FSIZE, &small) != 0) return "setrlimit failed";
  std::string outcome;
  try {
    write();
    outcome = "no error";
  } catch (const invp::Error& e) {
    if (std::string(e.what()).find(target.filename().string()) == std::string::npos)
      outcome = std::string("an error without the file's name: ") + e.what();
  } catch (const std::exception& e) {
    outcome = std::string("not an invp::Error: ") + e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  return outcome;
}

inline void expect_fails_cleanly_on_full_disk(const std::filesystem::path& target,
                                              const std::function<void()>& write,
                                              long limit_bytes = 16384, bool isolate = false) {
  ASSERT_TRUE(std::filesystem::exists(target)) << "needs a good file to protect: " << target;
  const std::string before = file_bytes(target);
  if (!isolate) {
    EXPECT_EQ(write_under_limit(target, write, limit_bytes), "") << target;
  } else {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const std::string outcome = write_under_limit(target, write, limit_bytes);
      if (!outcome.empty()) std::fprintf(stderr, "%s: %s\n", target.c_str(), outcome.c_str());
      std::_Exit(outcome.empty() ? 0 : 10);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status)) << target << ": the writer died of signal " << WTERMSIG(status);
    EXPECT_EQ(WEXITSTATUS(status), 0) << target << ": see the child's message above";
  }
  EXPECT_TRUE(file_bytes(target) == before) << target << " was changed by the failed write";
  for (const auto& e : std::filesystem::directory_iterator(target.parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos)
        << "temporary file left behind: " << e.path();
}

}  // namespace invp::test
