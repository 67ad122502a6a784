#include <invp/serve/metrics.h>

#include <cstdio>

namespace invp::serve {

size_t Metrics::route_of(const std::string& path) {
  auto starts = [&](const char* p) { return path.rfind(p, 0) == 0; };
  if (path == "/" || path == "/app.js" || path == "/style.css") return 0;
  if (path == "/api/query") return 1;
  if (path == "/api/categories") return 2;
  if (path == "/api/propagation") return 3;
  if (path == "/api/info") return 4;
  if (starts("/api/image/")) return 5;
  if (path == "/health") return 6;
  if (path == "/metrics") return 7;
  return 8;
}

void Metrics::record(size_t route, int status, double seconds) {
  auto& r = routes_[route < routes_.size() ? route : routes_.size() - 1];
  ++r.requests;
  if (status >= 400 && status < 500) ++r.client_errors;
  if (status >= 500) ++r.server_errors;
  size_t b = 0;
  while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
  ++buckets_[b];
  ++count_;
  sum_us_ += int64_t(seconds * 1e6);
}

std::string Metrics::text(const std::vector<std::pair<std::string, std::pair<std::string, double>>>& gauges) const {
  std::string out;
  char line[256];
  out += "# HELP invp_http_requests_total HTTP requests answered, by route.\n# TYPE invp_http_requests_total counter\n";
  for (size_t i = 0; i < kRoutes.size(); ++i) {
    std::snprintf(line, sizeof line, "invp_http_requests_total{route=\"%s\"} %lld\n", kRoutes[i],
                  (long long)routes_[i].requests.load());
    out += line;
  }
  out += "# HELP invp_http_errors_total HTTP answers with a 4xx (client) or 5xx (server) status, by route.\n"
         "# TYPE invp_http_errors_total counter\n";
  for (size_t i = 0; i < kRoutes.size(); ++i) {
    std::snprintf(line, sizeof line, "invp_http_errors_total{route=\"%s\",class=\"4xx\"} %lld\n", kRoutes[i],
                  (long long)routes_[i].client_errors.load());
    out += line;
    std::snprintf(line, sizeof line, "invp_http_errors_total{route=\"%s\",class=\"5xx\"} %lld\n", kRoutes[i],
                  (long long)routes_[i].server_errors.load());
    out += line;
  }
  out += "# HELP invp_http_request_duration_seconds Time from routing to the response being ready.\n"
         "# TYPE invp_http_request_duration_seconds histogram\n";
  int64_t cum = 0;
  for (size_t b = 0; b <= kBuckets.size(); ++b) {
    cum += buckets_[b].load();
    if (b < kBuckets.size())
      std::snprintf(line, sizeof line, "invp_http_request_duration_seconds_bucket{le=\"%g\"} %lld\n", kBuckets[b],
                    (long long)cum);
    else
      std::snprintf(line, sizeof line, "invp_http_request_duration_seconds_bucket{le=\"+Inf\"} %lld\n", (long long)cum);
    out += line;
  }
  std::snprintf(line, sizeof line, "invp_http_request_duration_seconds_sum %.6f\ninvp_http_request_duration_seconds_count %lld\n",
                double(sum_us_.load()) / 1e6, (long long)count_.load());
  out += line;
  for (const auto& [name, hv] : gauges) {
    out += "# HELP " + name + " " + hv.first + "\n# TYPE " + name + " gauge\n";
    std::snprintf(line, sizeof line, "%s %.17g\n", name.c_str(), hv.second);
    out += line;
  }
  return out;
}

}  // namespace invp::serve
