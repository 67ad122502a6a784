// A full disk, simulated with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes past
// the limit fail with EFBIG as they would with ENOSPC). The writer runs in a forked child
// under the limit and must throw an invp::Error that names the target; the parent then
// checks that the previous good file is byte-for-byte intact and that no temporary file is
// left beside it. Build everything the writer needs before calling (the child must not
// start thread pools: libgomp is not fork-safe).
#pragma once
#include <invp/core/error.h>

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
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

inline void expect_fails_cleanly_on_full_disk(const std::filesystem::path& target,
                                              const std::function<void()>& write,
                                              long limit_bytes = 16384) {
  ASSERT_TRUE(std::filesystem::exists(target)) << "needs a good file to protect: " << target;
  const std::string before = file_bytes(target);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit r {};
    r.rlim_cur = r.rlim_max = rlim_t(limit_bytes);
    ::setrlimit(RLIMIT_FSIZE, &r);
    int code = 0;
    try {
      write();
      code = 10;
    } catch (const invp::Error& e) {
      if (std::string(e.what()).find(target.filename().string()) == std::string::npos) {
        std::fprintf(stderr, "error does not name %s: %s\n", target.c_str(), e.what());
        code = 11;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "not an invp::Error: %s\n", e.what());
      code = 12;
    }
    std::_Exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << target << ": the writer died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << target << ": 10 = no error, 11 = error without the file's name, 12 = not an invp::Error";
  EXPECT_TRUE(file_bytes(target) == before) << target << " was changed by the failed write";
  for (const auto& e : std::filesystem::directory_iterator(target.parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos)
        << "temporary file left behind: " << e.path();
}

}  // namespace invp::test
