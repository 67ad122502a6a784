#include <invp/core/error.h>
#include <invp/core/launch.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace invp {
namespace {
const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int env_int(const char* name, int fallback) {
  const char* v = env(name);
  if (!v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end || x < 0 || x > 1 << 30)
    throw Error("", std::string("environment variable ") + name + "='" + v + "' is not a non-negative integer");
  return int(x);
}

std::atomic<int> g_signal{0};
extern "C" void remember_signal(int sig) { g_signal = sig; }
}  // namespace

RankEnv rank_env_from_environment() {
  RankEnv r;
  const char *rank = "RANK", *world = "WORLD_SIZE", *local = "LOCAL_RANK";
  if (env("WORLD_SIZE")) {
    r.launcher = "torchrun";
  } else if (env("SLURM_NTASKS")) {
    r.launcher = "slurm";
    rank = "SLURM_PROCID", world = "SLURM_NTASKS", local = "SLURM_LOCALID";
  } else {
    return r;
  }
  r.world = env_int(world, 1);
  r.rank = env_int(rank, 0);
  r.local_rank = env_int(local, 0);
  if (r.world < 1) throw Error("", std::string(world) + " must be at least 1");
  if (r.rank >= r.world)
    throw Error("", std::string(rank) + "=" + std::to_string(r.rank) + " is outside [0, " + world + "=" +
                        std::to_string(r.world) + ")");
  if (!r.distributed()) return r;
  if (!env("MASTER_ADDR"))
    throw Error("", std::string(world) + "=" + std::to_string(r.world) + " but MASTER_ADDR is not set",
                "set MASTER_ADDR and MASTER_PORT to rank 0's host and a free port");
  r.master_addr = env("MASTER_ADDR");
  r.master_port = env_int("MASTER_PORT", 0);
  if (r.master_port < 1 || r.master_port > 65535)
    throw Error("", "MASTER_PORT must be set to a TCP port (1-65535)", "e.g. MASTER_PORT=29500");
  return r;
}

int free_local_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error("", std::string("socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw Error("", std::string("no free TCP port on 127.0.0.1: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

std::vector<std::string> drop_option(const std::vector<std::string>& args, const std::string& name) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == name) {
      ++i;  // and its value
      continue;
    }
    if (args[i].rfind(name + "=", 0) == 0) continue;
    out.push_back(args[i]);
  }
  return out;
}

namespace {
struct Child {
  pid_t pid = -1;
  int out = -1, err = -1;        // read ends of the child's stdout and stderr
  std::string out_buf, err_buf;  // a line not yet complete
  bool done = false;
  int code = 0;
};

// Writes the complete lines of `buf` to `to`, each prefixed; keeps the incomplete rest.
void flush_lines(std::string& buf, FILE* to, const std::string& prefix, bool all) {
  size_t start = 0;
  for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1)
    std::fprintf(to, "%s%.*s\n", prefix.c_str(), int(nl - start), buf.data() + start);
  buf.erase(0, start);
  if (all && !buf.empty()) {
    std::fprintf(to, "%s%s\n", prefix.c_str(), buf.c_str());
    buf.clear();
  }
  std::fflush(to);
}

pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env, int out[2], int err[2]) {
  pid_t pid = ::fork();
  if (pid < 0) throw Error("", std::string("fork: ") + std::strerror(errno));
  if (pid > 0) return pid;
  // Child: a rank dies with its launcher, so no rank outlives a killed `--nproc` run.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  ::dup2(out[1], 1);
  ::dup2(err[1], 2);
  ::close(out[0]), ::close(out[1]), ::close(err[0]), ::close(err[1]);
  for (const auto& kv : extra_env) ::putenv(const_cast<char*>(kv.c_str()));
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  ::execv("/proc/self/exe", cargv.data());
  std::fprintf(stderr, "invp: error: exec /proc/self/exe: %s\n", std::strerror(errno));
  ::_exit(127);
}

// Reads what is available on fd into buf; false at end of file.
bool drain(int fd, std::string& buf) {
  char tmp[4096];
  ssize_t n = ::read(fd, tmp, sizeof tmp);
  if (n > 0) buf.append(tmp, size_t(n));
  return n > 0 || (n < 0 && (errno == EINTR || errno == EAGAIN));
}
}  // namespace

int run_local_ranks(int ranks, const std::vector<std::string>& args, int threads_per_rank, int grace_seconds) {
  if (ranks < 1) throw Error("", "--nproc must be at least 1");
  const int port = free_local_port();
  std::vector<std::string> base = {"invp", "--threads", std::to_string(std::max(1, threads_per_rank))};
  for (const auto& a : drop_option(args, "--threads")) base.push_back(a);
  auto old_int = std::signal(SIGINT, remember_signal), old_term = std::signal(SIGTERM, remember_signal);
  std::vector<Child> kids(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r) {
    int out[2], err[2];
    if (::pipe(out) != 0 || ::pipe(err) != 0) throw Error("", std::string("pipe: ") + std::strerror(errno));
    std::vector<std::string> e = {"RANK=" + std::to_string(r), "WORLD_SIZE=" + std::to_string(ranks),
                                  "LOCAL_RANK=" + std::to_string(r), "LOCAL_WORLD_SIZE=" + std::to_string(ranks),
                                  "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
    kids[size_t(r)].pid = spawn(base, e, out, err);
    ::close(out[1]), ::close(err[1]);
    kids[size_t(r)].out = out[0], kids[size_t(r)].err = err[0];
  }
  int first_failure = 0, forwarded = 0;
  auto failed_at = std::chrono::steady_clock::time_point{};
  bool killed = false;
  for (;;) {
    if (int sig = g_signal.exchange(0)) {  // pass Ctrl-C / SIGTERM on to every rank
      for (auto& k : kids)
        if (!k.done) ::kill(k.pid, sig);
      forwarded = sig;
    }
    std::vector<pollfd> fds;
    std::vector<std::pair<size_t, bool>> who;  // (rank, is stderr)
    for (size_t r = 0; r < kids.size(); ++r) {
      if (kids[r].out >= 0) fds.push_back({kids[r].out, POLLIN, 0}), who.push_back({r, false});
      if (kids[r].err >= 0) fds.push_back({kids[r].err, POLLIN, 0}), who.push_back({r, true});
    }
    if (!fds.empty()) ::poll(fds.data(), fds.size(), 200);
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      auto& k = kids[who[i].first];
      const std::string prefix = "[rank " + std::to_string(who[i].first) + "] ";
      int& fd = who[i].second ? k.err : k.out;
      std::string& buf = who[i].second ? k.err_buf : k.out_buf;
      const bool open = drain(fd, buf);
      flush_lines(buf, who[i].second ? stderr : stdout, prefix, !open);
      if (!open) ::close(fd), fd = -1;
    }
    bool all_done = true;
    for (size_t r = 0; r < kids.size(); ++r) {
      auto& k = kids[r];
      if (!k.done) {
        int st = 0;
        if (::waitpid(k.pid, &st, WNOHANG) == k.pid) {
          k.done = true;
          k.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
          if (k.code != 0 && first_failure == 0) {
            first_failure = k.code;
            failed_at = std::chrono::steady_clock::now();
            if (!forwarded)
              std::fprintf(stderr, "invp: rank %zu failed (%s %d); stopping the other ranks\n", r,
                           WIFEXITED(st) ? "exit code" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            for (auto& o : kids)
              if (!o.done) ::kill(o.pid, SIGTERM);
          }
        }
      }
      all_done = all_done && k.done && k.out < 0 && k.err < 0;
    }
    if (all_done) break;
    if (first_failure && !killed &&
        std::chrono::steady_clock::now() - failed_at > std::chrono::seconds(grace_seconds)) {
      for (auto& o : kids)
        if (!o.done) ::kill(o.pid, SIGKILL);
      killed = true;
    }
  }
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  return first_failure;
}

}  // namespace invp
