// `invp serve` on cpp-httplib. Debian's libcpp-httplib is a compiled library built with
// OpenSSL, zlib and Brotli support: its defines come from pkg-config (CMakeLists.txt), or the
// classes here would not match the library's layout.
#include <invp/serve/server.h>

#include <invp/core/error.h>
#include <invp/core/log.h>
#include <invp/data/montage.h>
#include <invp/search/query_service.h>
#include <invp/serve/metrics.h>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace invp::serve {
struct EmbeddedFile {
  const char* path;
  const unsigned char* data;
  std::size_t size;
};
extern const EmbeddedFile kEmbeddedFiles[];

namespace {
using Clock = std::chrono::steady_clock;
thread_local Clock::time_point request_start;

int status_of(search::Fault f) {
  switch (f) {
    case search::Fault::none: return 200;
    case search::Fault::bad_request: return 400;
    case search::Fault::not_found: return 404;
    case search::Fault::too_large: return 413;
    case search::Fault::unprocessable: return 422;
    case search::Fault::unavailable: return 503;
  }
  return 500;
}

void send_json(httplib::Response& res, const nlohmann::json& j, int status = 200) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(j.dump(), "application/json");
}
void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, {{"error", message}, {"status", status}}, status);
}

// A request parameter problem, answered with 400 and its message.
struct BadParam : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Every parameter must be printable ASCII without path segments: ids and k are numbers, and
// nothing a client sends is ever used as a path, so anything else is a mistake or a probe.
// The one exception is `filter`: an expression matched against metadata (never opened), whose
// ranges hold "..", path patterns '/', and category names any UTF-8.
void check_params(const httplib::Request& req) {
  for (const auto& [key, value] : req.params) {
    const bool expression = key == "filter";
    for (const std::string* s : {&key, &value})
      for (unsigned char c : *s)
        if (c < 0x20 || c == 0x7f || (c > 0x7e && !(expression && s == &value)))
          throw BadParam("parameter '" + key + "' is not printable ASCII");
    if (expression) continue;
    if (value.find("..") != std::string::npos || value.find('/') != std::string::npos)
      throw BadParam("parameter '" + key + "' holds a path; ids and k are numbers");
  }
}

int64_t int_param(const std::string& name, const std::string& text, int64_t lo, int64_t hi) {
  if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos)
    throw BadParam(name + " must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi) +
                   ", not '" + text + "'");
  const int64_t v = std::stoll(text);
  if (v < lo || v > hi)
    throw BadParam(name + " must be from " + std::to_string(lo) + " to " + std::to_string(hi) + ", not " + text);
  return v;
}
int64_t int_param(const httplib::Request& req, const std::string& name, int64_t dflt, int64_t lo, int64_t hi) {
  return req.has_param(name) ? int_param(name, req.get_param_value(name), lo, hi) : dflt;
}

// The query of a request: ?id=N, or an image as the body (raw, or the multipart field "image").
search::QueryRequest request_of(const httplib::Request& req, int64_t k, bool body_allowed) {
  search::QueryRequest r;
  r.k = int(k);
  if (req.has_param("filter")) {
    r.filter = req.get_param_value("filter");
    if (r.filter.size() > 4096) throw BadParam("filter longer than 4096 characters");
  }
  if (req.has_param("id")) {
    r.id = int_param(req, "id", -1, 0, int64_t(1) << 53);
    r.name = "id " + std::to_string(r.id);
    return r;
  }
  if (!body_allowed) throw BadParam("give ?id=N, or POST an image");
  r.name = "upload";
  if (req.is_multipart_form_data()) {
    if (!req.has_file("image")) throw BadParam("multipart body without an 'image' field");
    const auto f = req.get_file_value("image");
    r.image.assign(f.content.begin(), f.content.end());
    if (!f.filename.empty()) r.name = "upload";  // a client's file name is never used as a path
  } else {
    r.image.assign(req.body.begin(), req.body.end());
  }
  if (r.image.empty()) throw BadParam("empty body: send the image as the body or as the multipart field 'image'");
  return r;
}

class Service {
 public:
  Service(const ServeOptions& o, search::QueryService& q) : o_(o), q_(q) {}

  void routes(httplib::Server& s) {
    s.Get("/", [this](const auto& rq, auto& rs) { page(rq, rs, "/index.html"); });
    s.Get("/app.js", [this](const auto& rq, auto& rs) { page(rq, rs, "/app.js"); });
    s.Get("/style.css", [this](const auto& rq, auto& rs) { page(rq, rs, "/style.css"); });
    s.Get("/health", [this](const auto&, auto& rs) {
      send_json(rs, {{"status", "ok"}, {"generation", q_.generation()}, {"queue_depth", q_.queue_depth()}});
    });
    s.Get("/metrics", [this](const auto&, auto& rs) { rs.set_content(metrics_text(), "text/plain; version=0.0.4"); });
    s.Get("/api/info", [this](const auto&, auto& rs) { send_json(rs, q_.info()); });
    s.Get("/api/query", [this](const auto& rq, auto& rs) { query(rq, rs, false); });
    s.Post("/api/query", [this](const auto& rq, auto& rs) { query(rq, rs, true); });
    s.Get("/api/categories", [this](const auto& rq, auto& rs) { categories(rq, rs, false); });
    s.Post("/api/categories", [this](const auto& rq, auto& rs) { categories(rq, rs, true); });
    s.Get("/api/propagation", [this](const auto& rq, auto& rs) { propagation(rq, rs, false); });
    s.Post("/api/propagation", [this](const auto& rq, auto& rs) { propagation(rq, rs, true); });
    s.Get(R"(/api/image/([^/]*))", [this](const auto& rq, auto& rs) { image(rq, rs); });
  }

  Metrics metrics;
  std::atomic<int> in_flight{0};

 private:
  const ServeOptions& o_;
  search::QueryService& q_;

  void page(const httplib::Request&, httplib::Response& res, const std::string& path) {
    for (const EmbeddedFile* f = kEmbeddedFiles; f->path; ++f) {
      if (path != f->path) continue;
      const char* type = path.size() > 3 && path.compare(path.size() - 3, 3, ".js") == 0 ? "text/javascript"
                         : path.size() > 4 && path.compare(path.size() - 4, 4, ".css") == 0
                             ? "text/css"
                             : "text/html; charset=utf-8";
      res.set_content(reinterpret_cast<const char*>(f->data), f->size, type);
      return;
    }
    send_error(res, 404, "no such page");
  }

  void query(const httplib::Request& req, httplib::Response& res, bool body) {
    const auto k = int_param(req, "k", 10, 1, o_.max_k);
    auto request = request_of(req, k, body);
    const std::string filter = request.filter;
    auto r = q_.query(std::move(request));
    if (r.fault != search::Fault::none) return send_error(res, status_of(r.fault), r.error);
    nlohmann::json j{{"query", r.name}, {"k", k}, {"generation", q_.generation()}, {"hits", search::hits_json(r.hits)}};
    if (!filter.empty()) j["filter"] = filter;
    if (!r.note.empty()) j["note"] = r.note;
    send_json(res, j);
  }

  void categories(const httplib::Request& req, httplib::Response& res, bool body) {
    const auto k = int_param(req, "k", 50, 1, o_.max_k);
    auto r = request_of(req, k, body);
    auto cats = q_.categories(r, int(k));
    nlohmann::json j = nlohmann::json::array();
    for (auto& s : cats) j.push_back({{"label", s.label}, {"category", s.name}, {"vote", s.vote}, {"centroid_cosine", s.centroid}});
    send_json(res, {{"query", r.name}, {"k", k}, {"categories", j}});
  }

  void propagation(const httplib::Request& req, httplib::Response& res, bool body) {
    const auto k = int_param(req, "k", 4, 1, 32);
    const auto hops = int_param(req, "hops", 3, 1, 5);
    auto r = request_of(req, k, body);
    auto v = q_.propagation(r, int(k), int(hops));
    nlohmann::json hj = nlohmann::json::array();
    for (auto& hop : v.hops) hj.push_back(search::hits_json(hop));
    send_json(res, {{"query", r.name}, {"k", k}, {"anchor_id", v.anchor.id}, {"hops", hj}});
  }

  void image(const httplib::Request& req, httplib::Response& res) {
    const int64_t id = int_param("id", req.matches[1].str(), 0, int64_t(1) << 53);
    auto png = data::encode_png(q_.item_image(id));
    res.set_header("Cache-Control", "max-age=3600");
    res.set_content(reinterpret_cast<const char*>(png.data()), png.size(), "image/png");
  }

  std::string metrics_text() {
    return metrics.text({{"invp_queue_depth", {"Queries and tasks waiting for the engine.", double(q_.queue_depth())}},
                         {"invp_in_flight_requests", {"Requests being handled.", double(in_flight.load())}},
                         {"invp_index_generation", {"Generation of the index being served.", double(q_.generation())}},
                         {"invp_engine_batches", {"Batches the engine has answered since start.", double(q_.batches())}}});
  }
};

// Wires limits, auth, metrics and error answers around the routes.
void configure(httplib::Server& s, Service& svc, const ServeOptions& o) {
  const size_t threads = size_t(std::max(1, o.threads));
  s.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.set_payload_max_length(size_t(o.max_upload));
  s.set_read_timeout(o.timeout_seconds, 0);
  s.set_write_timeout(o.timeout_seconds, 0);
  s.set_keep_alive_timeout(5);
  // httplib's default of 5 requests a connection makes busy clients reconnect all the time, and
  // its listen backlog (5, compiled in) then drops SYNs: a 1 s retransmit each time.
  s.set_keep_alive_max_count(1000);
  // httplib's default sets SO_REUSEPORT, which lets a second server bind a port that is in
  // use and take half its connections; SO_REUSEADDR alone still allows a quick restart.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  // Headers and body go out in separate writes: with Nagle's algorithm the body would wait
  // for the client's delayed ACK of the headers on every keep-alive answer.
  s.set_tcp_nodelay(true);
  s.set_pre_routing_handler([&svc, &o](const httplib::Request& req, httplib::Response& res) {
    request_start = Clock::now();
    ++svc.in_flight;
    const bool guarded = req.path.rfind("/api/", 0) == 0 || req.path == "/metrics";
    if (guarded && !o.api_key.empty() && req.get_header_value("Authorization") != "Bearer " + o.api_key) {
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, 401, "missing or wrong API key (send 'Authorization: Bearer KEY')");
      return httplib::Server::HandlerResponse::Handled;
    }
    try {
      check_params(req);
    } catch (const BadParam& e) {
      send_error(res, 400, e.what());
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const BadParam& e) {
      send_error(res, 400, e.what());
    } catch (const search::QueryError& e) {
      send_error(res, status_of(e.fault()), e.what());
    } catch (const std::exception& e) {
      send_error(res, 500, e.what());
    } catch (...) {
      send_error(res, 500, "unknown error");
    }
  });
  // httplib's own refusals (no route, body over the limit, malformed multipart) get a JSON body
  // too; answers the handlers already wrote are left alone.
  s.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg = "request refused (HTTP " + std::to_string(res.status) + ")";
    if (res.status == 400) msg = "malformed or incomplete request (bad header, body or multipart, or sent slower than the timeout)";
    if (res.status == 404) msg = "no such endpoint: " + req.method + " " + req.path;
    if (res.status == 413) msg = "request body over the upload limit";
    send_error(res, res.status, msg);
    return httplib::Server::HandlerResponse::Handled;
  }));
  s.set_logger([&svc](const httplib::Request& req, const httplib::Response& res) {
    const double secs = std::chrono::duration<double>(Clock::now() - request_start).count();
    svc.metrics.record(Metrics::route_of(req.path), res.status, secs);
    --svc.in_flight;
  });
}
}  // namespace

void run_server(const ServeOptions& o) {
  // SIGINT/SIGTERM are taken by one thread (sigwait), so every thread started below
  // inherits the mask and none is killed mid-request; the waiter stops the server.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGUSR1);  // sent by us to end the waiter when the server ends first
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // OpenCV refuses images over this many pixels before allocating them (read once, at the
  // first decode): a small hostile file cannot claim gigabytes.
  ::setenv("OPENCV_IO_MAX_IMAGE_PIXELS", std::to_string(o.max_pixels).c_str(), 1);

  search::ServiceOptions so;
  so.model_override = o.model;
  so.device = o.device;
  so.max_k = o.max_k;
  so.max_pixels = o.max_pixels;
  so.background = true;
  so.reload_seconds = o.reload_seconds;
  search::QueryService queries(o.index, so);
  Service svc(o, queries);
  httplib::Server server;
  configure(server, svc, o);
  svc.routes(server);
  const int port = o.port == 0 ? server.bind_to_any_port(o.host) : (server.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0)
    throw Error(o.host + ":" + std::to_string(o.port), "cannot listen there (port in use, or not an address here)",
                "pick another --port or --host");
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (sig != SIGUSR1) log::info(std::string("got ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ": finishing requests in flight");
    server.stop();
  });
  if (o.on_ready) o.on_ready("http://" + o.host + ":" + std::to_string(port) + "/");
  server.listen_after_bind();  // returns once stopped and every worker has finished its request
  pthread_kill(waiter.native_handle(), SIGUSR1);
  waiter.join();
}

}  // namespace invp::serve
