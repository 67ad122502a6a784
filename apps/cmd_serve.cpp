// `invp serve`: the index over HTTP, with a web page to browse it.
#include "common.h"

#include <invp/core/log.h>
#include <invp/serve/server.h>

#include <cstdio>
#include <cstdlib>

namespace invp::app {

void add_serve_command(CLI::App& app) {
  auto o = std::make_shared<serve::ServeOptions>();
  auto mb = std::make_shared<double>(20);
  auto* c = app.add_subcommand(
      "serve",
      "Serve an index over HTTP: a JSON API (query by image or id, nearest categories, the "
      "propagated set, index facts, items as PNG), /health, /metrics, and a web page at / to "
      "browse the collection. Concurrent queries are embedded together. Ctrl-C or SIGTERM "
      "finishes the requests in flight and exits 0. API: docs/SERVE.md.");
  c->add_option("-i,--index", o->index, "Index directory (from invp index build)")->required();
  c->add_option("--host", o->host, "Address to listen on (another than 127.0.0.1 exposes the index)")
      ->capture_default_str();
  c->add_option("--port", o->port, "Port (0: any free port; the URL is printed on stdout)")
      ->capture_default_str()->check(CLI::Range(0, 65535));
  c->add_option("--api-key", o->api_key,
                "Require 'Authorization: Bearer KEY' on /api/* and /metrics (default: $INVP_API_KEY)");
  c->add_option("--max-upload", *mb, "Largest request body in MB")->capture_default_str()->check(CLI::Range(0.001, 4096.0));
  c->add_option("--max-pixels", o->max_pixels, "Largest decoded upload in pixels")->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  c->add_option("--workers", o->threads, "HTTP worker threads: decoding, request handling; one per open client connection")
      ->capture_default_str()->check(CLI::Range(1, 256));
  c->add_option("--timeout", o->timeout_seconds, "Seconds a client may take to send or read")
      ->capture_default_str()->check(CLI::Range(1, 3600));
  c->add_option("--model", o->model, "Model override (must be the index's model)");
  c->add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  c->callback([o, mb] {
    globals().action = [o, mb] {
      if (o->api_key.empty())
        if (const char* k = std::getenv("INVP_API_KEY")) o->api_key = k;
      o->max_upload = int64_t(*mb * 1024 * 1024);
      o->on_ready = [o](const std::string& url) {
        // stdout carries the URL alone, so a script can read where to connect (--port 0).
        std::printf("%s\n", url.c_str());
        std::fflush(stdout);
        log::info("serving " + o->index + " on " + url + (o->api_key.empty() ? "" : " (API key required)") +
                  "; Ctrl-C to stop");
      };
      serve::run_server(*o);
      log::info("stopped");
    };
  });
}

}  // namespace invp::app
