// `invp serve`: an HTTP service over one index directory (JSON API, Prometheus metrics and the
// web page embedded in the binary). The HTTP library stays inside server.cpp; callers see
// plain options. Endpoints and their answers: docs/SERVE.md.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace invp::serve {

struct ServeOptions {
  std::string index;                     // index directory
  std::string model, device = "cpu";     // model override (must match the index) and device
  std::string host = "127.0.0.1";
  int port = 8080;                       // 0: any free port (the URL is reported by on_ready)
  std::string api_key;                   // when set, /api/* and /metrics need "Authorization: Bearer KEY"
  int64_t max_upload = 20 << 20;         // request bodies over this are refused (413)
  int64_t max_pixels = 40'000'000;       // decoded uploads over this are refused (413)
  // HTTP workers: decoding and request handling. httplib keeps a worker per open keep-alive
  // connection, so this is also how many clients are served at once.
  int threads = 64;
  int max_k = 1000;
  int timeout_seconds = 10;              // a client that sends or reads slower is dropped
  double reload_seconds = 1.0;           // how often to look for a new generation (index add)
  std::function<void(const std::string& url)> on_ready;
};

// Serves until SIGINT or SIGTERM, then stops accepting, answers what is in flight and
// returns. Throws invp::Error when the index cannot be opened or the address cannot be bound.
void run_server(const ServeOptions& opts);

}  // namespace invp::serve
