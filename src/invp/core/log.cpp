#include <invp/core/log.h>

#include <unistd.h>

#include <atomic>
#include <cstdio>

namespace invp::log {
namespace {
std::atomic<bool> g_quiet{false};
}
void set_quiet(bool q) { g_quiet = q; }
bool quiet() { return g_quiet; }
void info(const std::string& msg) {
  if (!g_quiet) std::fprintf(stderr, "invp: %s\n", msg.c_str());
}
void warn(const std::string& msg) { std::fprintf(stderr, "invp: warning: %s\n", msg.c_str()); }
bool stderr_is_tty() { return isatty(fileno(stderr)) == 1; }
}  // namespace invp::log
