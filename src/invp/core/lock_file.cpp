#include <invp/core/error.h>
#include <invp/core/lock_file.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

namespace invp {

DirLock::DirLock(const std::string& dir) : DirLock((std::filesystem::path(dir) / ".invp.lock").string(), dir) {}

std::unique_ptr<DirLock> DirLock::for_file(const std::string& file) {
  const std::filesystem::path p(file);
  return std::unique_ptr<DirLock>(
      new DirLock((p.parent_path() / ("." + p.filename().string() + ".lock")).string(), file));
}

DirLock::DirLock(const std::string& lock_path, const std::string& shown) : path_(lock_path) {
  const std::string& dir = shown;  // what errors name
  std::error_code ec;
  const auto parent = std::filesystem::path(lock_path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(dir, std::string("cannot create lock file: ") + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, size_t(n)) : "?";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(fd_);
    fd_ = -1;
    throw Error(dir, "in use by another invp process (pid " + holder + ")",
                "wait for it to finish, or stop it; a lock left by a dead process is taken over");
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    ssize_t w = ::pwrite(fd_, pid.data(), pid.size(), 0);
    (void)w;
  }
}

DirLock::~DirLock() {
  if (fd_ >= 0) {
    // Leave the file (removing it would race with a waiting process); just drop the lock.
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
}

}  // namespace invp
