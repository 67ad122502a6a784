// One writer per output: a lock file (flock, with the holder's pid written inside) guards a
// run directory or an index directory. The kernel drops the lock when its process dies, so
// a stale lock left by a killed run is taken over silently.
#pragma once
#include <memory>
#include <string>

namespace invp {

class DirLock {
 public:
  // Locks DIR/.invp.lock (creating DIR if needed). Throws invp::Error naming the directory
  // and the pid of the holder when another live process holds it.
  explicit DirLock(const std::string& dir);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  const std::string& path() const { return path_; }

  // Guards a single output FILE: locks the hidden ".NAME.lock" beside it (the directory
  // must exist). Errors name FILE.
  static std::unique_ptr<DirLock> for_file(const std::string& file);

 private:
  DirLock(const std::string& lock_path, const std::string& shown);
  std::string path_;
  int fd_ = -1;
};

}  // namespace invp
