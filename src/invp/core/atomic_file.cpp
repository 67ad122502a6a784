#include <invp/core/atomic_file.h>
#include <invp/core/error.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace invp {
namespace {
void fsync_path(const std::string& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}
}  // namespace

void write_atomically(const std::string& path,
                      const std::function<void(const std::string&)>& write) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    write(tmp);
    fsync_path(tmp);
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw Error(path, "cannot rename temporary file into place: " + ec.message());
    auto dir = std::filesystem::path(path).parent_path();
    fsync_path(dir.empty() ? "." : dir.string());
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

void write_file_atomically(const std::string& path, const std::string& contents) {
  write_atomically(path, [&](const std::string& tmp) {
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw Error(path, std::string("cannot write: ") + std::strerror(errno));
    size_t n = std::fwrite(contents.data(), 1, contents.size(), f);
    bool ok = n == contents.size() && std::fflush(f) == 0;
    int err = errno;
    if (std::fclose(f) != 0) ok = false;
    if (!ok) throw Error(path, std::string("write failed: ") + std::strerror(err), "check free disk space");
  });
}
}  // namespace invp
