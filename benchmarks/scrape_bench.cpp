// /metrics with many series: embeds a troupe node (the library API a host
// program uses), feeds it N series through the metrics registry, then times
// GET /metrics over HTTP and the same bytes served statically by a peer
// (nginx, URL given on the command line) in the same run.
//
//   scrape_bench DATA_DIR SERIES PEER_URL OUT_FILE
//
// Prints one RESULT line; asserts nothing.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <caf/actor_system.hpp>

#include "actors/metrics/metrics.hpp"
#include "actors/metrics/metrics_model.hpp"
#include "http/http_client.hpp"
#include "runtime/runtime.hpp"

using namespace troupe;
using clk = std::chrono::steady_clock;

namespace {

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs[xs.size() / 2];
}

/// Times `n` GETs of `path` at `base`; returns the median in ms and the body.
double time_gets(const http::url& base, const std::string& path, int n, std::string* body) {
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    auto t0 = clk::now();
    auto res = http::fetch(base, "GET", path, {}, {}, std::chrono::seconds(60));
    auto t1 = clk::now();
    if (res.status != 200) {
      std::cerr << "GET " << path << " -> " << res.status << " " << res.error << "\n";
      std::exit(1);
    }
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (body)
      *body = std::move(res.body);
  }
  return median(ms);
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: scrape_bench DATA_DIR SERIES PEER_URL OUT_FILE\n";
    return 2;
  }
  int series = std::stoi(argv[2]);
  config_sources src;
  src.dotenv.clear();
  src.flags = {{"listen", "127.0.0.1:0"},
               {"data_dir", argv[1]},
               {"log.level", "warn"},
               {"metrics.max_series", std::to_string(series + 100)}};
  runtime rt{load_config(src)};
  rt.start();
  auto& fam = *metrics::find_family("http.request.duration");
  metric_deltas batch;
  for (int i = 0; i < series; ++i) {
    for (int k = 0; k < 3; ++k)
      batch.push_back(
          histogram_delta(fam, {"GET", "/bench/" + std::to_string(i), "200"}, 0.001 * (k + 1)));
    if (batch.size() >= 3000) {
      report_metrics(rt.system(), std::move(batch));
      batch.clear();
    }
  }
  report_metrics(rt.system(), std::move(batch));
  auto base = *http::parse_url("http://" + rt.address());
  // Wait until every series exists (the registry answers in order).
  std::string text;
  for (int tries = 0;; ++tries) {
    time_gets(base, "/metrics", 1, &text);
    const std::string key = "\ntroupe_metrics_series ";
    if (auto pos = text.find(key); pos != std::string::npos) {
      if (std::stoi(text.substr(pos + key.size())) >= series)
        break;
    }
    if (tries > 600) {
      std::cerr << "series never appeared\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto troupe_ms = time_gets(base, "/metrics", 7, &text);
  std::ofstream{argv[4]} << text;
  auto peer = *http::parse_url(argv[3]);
  auto peer_ms = time_gets(peer, "/metrics.txt", 7, nullptr);
  std::printf("troupe GET /metrics with %d series: %.1f ms median, %zu bytes; nginx serving the "
              "same bytes: %.2f ms\n",
              series, troupe_ms, text.size(), peer_ms);
  std::printf("RESULT scrape series=%d troupe_ms=%.2f bytes=%zu peer_ms=%.2f ratio=%.1f\n", series,
              troupe_ms, text.size(), peer_ms, troupe_ms / peer_ms);
  rt.request_stop(0, "benchmark done");
  return rt.run_until_stopped();
}
