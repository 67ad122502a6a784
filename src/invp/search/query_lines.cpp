// `invp query --serve`: the resident line loop over a file descriptor.
#include <invp/core/error.h>
#include <invp/search/query_service.h>

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

namespace invp::search {
namespace {

// Lines of a file descriptor, with a way to ask "is another line ready now?" so that a
// resident loop can answer what it has before blocking for more.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}
  // The next line (without its newline). wait: block until one is complete or input ends;
  // otherwise return false as soon as no complete line is buffered or ready to read.
  // At the end of input a last unterminated line is returned, then false.
  bool next(std::string& line, bool wait) {
    for (;;) {
      const auto nl = buf_.find('\n', pos_);
      if (nl != std::string::npos) {
        line.assign(buf_, pos_, nl - pos_);
        pos_ = nl + 1;
        return true;
      }
      if (eof_) {
        if (pos_ == buf_.size()) return false;
        line.assign(buf_, pos_, std::string::npos);
        pos_ = buf_.size();
        return true;
      }
      if (!wait) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 0) <= 0) return false;
      }
      buf_.erase(0, pos_);
      pos_ = 0;
      char chunk[1 << 16];
      const ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error("-", std::string("cannot read standard input: ") + std::strerror(errno));
      if (n == 0) eof_ = true;
      else buf_.append(chunk, size_t(n));
    }
  }

 private:
  int fd_;
  std::string buf_;
  size_t pos_ = 0;
  bool eof_ = false;
};

// A line as a request: id:N for an indexed item, else an image path. A line that is
// neither comes back as an error result without reaching the service.
QueryRequest line_request(const std::string& l, int k, const std::string& filter, std::string& error) {
  QueryRequest r;
  r.name = l;
  r.k = k;
  r.filter = filter;
  const bool id_line = l.rfind("id:", 0) == 0;
  if (id_line && l.size() > 3 && l.find_first_not_of("0123456789", 3) == std::string::npos) {
    if (l.size() > 3 + 18) error = Error(l, "id out of range").what();
    else r.id = std::stoll(l.substr(3));
  } else if (id_line && !std::filesystem::exists(l)) {
    error = Error(l, "neither an id nor a file", "id:N takes a non-negative integer").what();
  } else {
    r.path = l;
  }
  return r;
}

}  // namespace

LineLoopReport serve_lines(QueryService& service, int in_fd, std::FILE* out, int k, const std::string& filter) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  // Enough lines to fill a batch; more would only delay the first answers of a bulk input.
  const size_t batch = 64;
  LineReader in(in_fd);
  std::vector<std::string> pending;
  LineLoopReport rep;
  auto answer = [&](const std::vector<std::string>& lines) {
    std::vector<std::string> errors(lines.size());
    std::vector<QueryRequest> requests;
    std::vector<size_t> asked;
    for (size_t i = 0; i < lines.size(); ++i) {
      auto r = line_request(lines[i], k, filter, errors[i]);
      if (errors[i].empty()) requests.push_back(std::move(r)), asked.push_back(i);
    }
    auto results = service.query_many(std::move(requests));
    for (size_t j = 0; j < asked.size(); ++j) errors[asked[j]] = results[j].error;
    std::string text;
    size_t g = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      nlohmann::ordered_json j{{"query", lines[i]}};  // the query first, for people reading along
      const bool asked_here = g < asked.size() && asked[g] == i;
      if (!errors[i].empty()) {
        j["error"] = errors[i];
        ++rep.failed;
      } else {
        j["hits"] = hits_json(results[g].hits);
        if (!results[g].note.empty()) j["note"] = results[g].note;
      }
      if (asked_here) ++g;
      text += j.dump() + "\n";
    }
    std::fwrite(text.data(), 1, text.size(), out);
    std::fflush(out);
    rep.answered += int64_t(lines.size());
  };
  for (;;) {
    std::string line;
    const bool wait = pending.empty();
    if (in.next(line, wait)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") != std::string::npos) pending.push_back(std::move(line));
      if (pending.size() < batch) continue;
    } else if (wait) {
      break;  // end of input, nothing left to answer
    }
    if (!pending.empty()) answer(pending);
    pending.clear();
  }
  rep.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return rep;
}

}  // namespace invp::search
