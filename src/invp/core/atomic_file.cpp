#include <invp/core/atomic_file.h>
#include <invp/core/error.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

namespace invp {
namespace {
// fsync; returns 0 or the errno. A full disk can surface only here (delayed allocation).
int fsync_path(const std::string& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) return errno;
  int err = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return err;
}

// First line of a library's exception text (LibTorch appends a stack trace).
std::string first_line(const char* what) {
  std::string s(what ? what : "");
  return s.substr(0, s.find('\n'));
}
}  // namespace

void write_atomically(const std::string& path,
                      const std::function<void(const std::string&)>& write) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  auto discard = [&] {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
  };
  try {
    write(tmp);
    if (int err = fsync_path(tmp))
      throw Error(path, std::string("cannot flush to disk: ") + std::strerror(err), "check free disk space");
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw Error(path, "cannot rename temporary file into place: " + ec.message());
    auto dir = std::filesystem::path(path).parent_path();
    fsync_path(dir.empty() ? "." : dir.string());  // best effort: not every filesystem can
  } catch (const Error&) {
    discard();
    throw;
  } catch (const std::exception& e) {  // a library's own exception (LibTorch, FAISS, OpenCV)
    discard();
    throw Error(path, "cannot write: " + first_line(e.what()), "check free disk space and permissions");
  } catch (...) {
    discard();
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

void remove_leftover_temp_files(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path p(path);
  auto dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  std::string prefix = p.filename().string() + ".tmp.";
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename().string().rfind(prefix, 0) == 0) {
      std::error_code ignored;  // best effort: a file we cannot remove is only clutter
      fs::remove(it->path(), ignored);
    }
}
}  // namespace invp
