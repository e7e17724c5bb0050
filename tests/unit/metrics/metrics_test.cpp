#define CAF_SUITE metrics
#include "support/dsl.hpp"

#include <cmath>

#include <nlohmann/json.hpp>

#include "actors/metrics/metrics.hpp"
#include "actors/metrics/metrics_export.hpp"
#include "actors/metrics/metrics_exporter.hpp"
#include "actors/metrics/metrics_model.hpp"

using namespace troupe;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

const metrics::family& fam(const char* key) {
  auto f = metrics::find_family(key);
  if (f == nullptr)
    CAF_FAIL("no family " << key);
  return *f;
}

/// The value of the exposition line that starts with `series ` (NaN if none).
double sample_of(const std::string& text, const std::string& series) {
  auto pos = text.find("\n" + series + " ");
  if (pos == std::string::npos)
    return std::nan("");
  auto start = pos + series.size() + 2;
  return std::stod(text.substr(start, text.find('\n', start) - start));
}

struct fixture : test::deterministic_fixture {
  std::shared_ptr<metrics::recorder> rec = std::make_shared<metrics::recorder>(0.01);
  metrics_actor registry;

  metrics_actor start(metrics_config cfg = {}) {
    cfg.sample_interval = 1s;
    std::vector<metric_source> sources{[r = rec] { return r->take(); }};
    registry = sys.spawn(metrics_registry, cfg, std::string{"node-a"}, sources);
    consume_messages();
    return registry;
  }

  ~fixture() override {
    if (registry)
      caf::anon_send_exit(registry, caf::exit_reason::user_shutdown);
    consume_messages();
  }

  std::string scrape() {
    std::string text;
    auto rh = self->request(registry, caf::infinite, prometheus_atom::value);
    consume_messages();
    rh.receive([&](std::string& t) { text = std::move(t); },
               [](caf::error& err) { CAF_FAIL("scrape failed: " << caf::to_string(err)); });
    return text;
  }

  json monitoring() {
    std::string text;
    auto rh = self->request(registry, caf::infinite, monitoring_atom::value);
    consume_messages();
    rh.receive([&](std::string& t) { text = std::move(t); },
               [](caf::error& err) { CAF_FAIL("monitoring failed: " << caf::to_string(err)); });
    return json::parse(text);
  }

  /// Moves the clock one sample interval on and lets the registry tick.
  void tick(int n = 1) {
    for (int i = 0; i < n; ++i) {
      advance_time(1s);
      consume_messages();
    }
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(metrics_tests, fixture)

CAF_TEST(recorded requests become a histogram a counter and windows) {
  start();
  auto& http = fam("http.request.duration");
  for (int i = 1; i <= 100; ++i)
    rec->observe(http, {"GET", "/jobs", "200"}, i / 1000.0); // 1 ms .. 100 ms
  rec->observe(http, {"POST", "/jobs", "201"}, 0.5);
  tick();
  auto text = scrape();
  const std::string get = R"({method="GET",route="/jobs",status="200"})";
  CAF_CHECK_EQUAL(sample_of(text, "troupe_http_requests_total" + get), 100.0);
  CAF_CHECK_EQUAL(sample_of(text, "troupe_http_request_duration_seconds_count" + get), 100.0);
  // Cumulative buckets: le=0.01 holds 1..10 ms, le=0.05 holds 1..50 ms.
  CAF_CHECK_EQUAL(
      sample_of(
          text,
          R"(troupe_http_request_duration_seconds_bucket{method="GET",route="/jobs",status="200",le="0.01"})"),
      10.0);
  CAF_CHECK_EQUAL(
      sample_of(
          text,
          R"(troupe_http_request_duration_seconds_bucket{method="GET",route="/jobs",status="200",le="0.05"})"),
      50.0);
  CAF_CHECK_EQUAL(
      sample_of(
          text,
          R"(troupe_http_request_duration_seconds_bucket{method="GET",route="/jobs",status="200",le="+Inf"})"),
      100.0);
  auto sum = sample_of(text, "troupe_http_request_duration_seconds_sum" + get);
  CAF_CHECK_LESS(std::abs(sum - 5.05), 1e-9);
  // p99 of 1..100 ms within 1 %.
  auto p99 = sample_of(
      text,
      R"(troupe_http_request_duration_seconds_window{method="GET",route="/jobs",status="200",window="1m",quantile="0.99"})");
  CAF_CHECK_LESS_OR_EQUAL(std::abs(p99 - 0.099) / 0.099, 0.0101);
  CAF_CHECK_EQUAL(sample_of(text, "troupe_heartbeat_total"), 1.0);
  CAF_CHECK_EQUAL(sample_of(text, "troupe_metrics_series"), 2.0);
}

CAF_TEST(observations leave the 1m window after a minute but stay in 15m and 1h) {
  start();
  auto& http = fam("http.request.duration");
  for (int i = 0; i < 10; ++i)
    rec->observe(http, {"GET", "/x", "200"}, 0.010);
  tick();
  auto count_in = [&](const json& doc, const char* window) -> uint64_t {
    for (auto& s : doc["series"])
      if (s["key"] == "http.request.duration")
        return s["windows"][window]["count"].get<uint64_t>();
    CAF_FAIL("series missing");
  };
  auto doc = monitoring();
  CAF_CHECK_EQUAL(count_in(doc, "1m"), 10u);
  tick(61);
  doc = monitoring();
  CAF_CHECK_EQUAL(count_in(doc, "1m"), 0u);
  CAF_CHECK_EQUAL(count_in(doc, "15m"), 10u);
  CAF_CHECK_EQUAL(count_in(doc, "1h"), 10u);
  advance_time(15min);
  consume_messages();
  doc = monitoring();
  CAF_CHECK_EQUAL(count_in(doc, "15m"), 0u);
  CAF_CHECK_EQUAL(count_in(doc, "1h"), 10u);
  advance_time(46min);
  consume_messages();
  doc = monitoring();
  CAF_CHECK_EQUAL(count_in(doc, "1h"), 0u);
  // The lifetime (the histogram and "max since start") keeps everything.
  for (auto& s : doc["series"])
    if (s["key"] == "http.request.duration") {
      CAF_CHECK_EQUAL(s["count"].get<uint64_t>(), 10u);
      CAF_CHECK_LESS(std::abs(s["max"].get<double>() - 0.010) / 0.010, 0.0101);
    }
}

CAF_TEST(gauges are sampled on every tick and summarised per window) {
  start();
  caf::anon_send(registry, metric_deltas{gauge_delta("jobs.queue.depth", {}, 4)});
  consume_messages();
  tick(3); // samples: 4 (first value), 4, 4, 4
  caf::anon_send(registry, metric_deltas{gauge_delta("jobs.queue.depth", {}, 8)});
  consume_messages();
  tick(4); // 8, 8, 8, 8
  auto doc = monitoring();
  auto& q = doc["system"]["queue_depth"];
  CAF_REQUIRE(q.is_object());
  CAF_CHECK_EQUAL(q["value"].get<double>(), 8.0);
  CAF_CHECK_EQUAL(q["windows"]["1m"]["count"].get<uint64_t>(), 8u);
  CAF_CHECK_EQUAL(q["windows"]["1m"]["max"].get<double>(), 8.0);
  CAF_CHECK_EQUAL(q["windows"]["1m"]["avg"].get<double>(), 6.0);
  auto text = scrape();
  CAF_CHECK_EQUAL(sample_of(text, "troupe_job_queue_depth"), 8.0);
  CAF_CHECK_EQUAL(sample_of(text, R"(troupe_job_queue_depth_window_max{window="15m"})"), 8.0);
}

CAF_TEST(a gauge board is sampled every tick and read again by a restarted registry) {
  auto board = std::make_shared<metrics::gauge_board>();
  auto start_with_board = [&] {
    metrics_config cfg;
    cfg.sample_interval = 1s;
    std::vector<metric_source> sources{[board] { return board->read(); }};
    registry = sys.spawn(metrics_registry, cfg, std::string{"node-a"}, sources);
    consume_messages();
  };
  start_with_board();
  board->set("logs.sink.lag", {"loki"}, 7);
  board->set("logs.sink.lag", {"loki"}, 5); // the latest value wins
  tick(3);
  auto text = scrape();
  CAF_CHECK_EQUAL(sample_of(text, R"(troupe_log_sink_lag_entries{sink="loki"})"), 5.0);
  // Sampled on each of the 3 ticks although it never changed, plus the
  // first value when it arrived.
  CAF_CHECK_EQUAL(
      sample_of(text,
                R"(troupe_log_sink_lag_entries_window_observations{sink="loki",window="1m"})"),
      4.0);
  // The registry goes; the next one knows the lag without being told again.
  caf::anon_send_exit(registry, caf::exit_reason::kill);
  consume_messages();
  start_with_board();
  tick();
  text = scrape();
  CAF_CHECK_EQUAL(sample_of(text, R"(troupe_log_sink_lag_entries{sink="loki"})"), 5.0);
}

CAF_TEST(new series beyond max_series are dropped and counted) {
  metrics_config cfg;
  cfg.max_series = 3;
  start(cfg);
  auto& http = fam("http.request.duration");
  for (int i = 0; i < 5; ++i)
    rec->observe(http, {"GET", "/r" + std::to_string(i), "200"}, 0.001);
  tick();
  auto text = scrape();
  CAF_CHECK_EQUAL(sample_of(text, "troupe_metrics_series"), 3.0);
  CAF_CHECK_EQUAL(sample_of(text, "troupe_metrics_dropped_series_total"), 2.0);
}

CAF_TEST(a histogram delta of another accuracy is merged and the registry lives on) {
  metrics_config cfg;
  cfg.relative_accuracy = 0.01;
  start(cfg);
  auto& wait = fam("jobs.queue.wait");
  caf::anon_send(registry, metric_deltas{histogram_delta(wait, {}, 2.0, 0.02),
                                         histogram_delta(wait, {}, 4.0, 0.01)});
  consume_messages();
  tick();
  auto text = scrape(); // fails the test if the registry died
  CAF_CHECK_EQUAL(sample_of(text, "troupe_job_queue_wait_seconds_count"), 2.0);
  CAF_CHECK_EQUAL(sample_of(text, "troupe_job_queue_wait_seconds_sum"), 6.0);
  // The lower median of {2, 4} is the value re-binned from 2 % to 1 %.
  auto p50 = sample_of(text, R"(troupe_job_queue_wait_seconds_window{window="1m",quantile="0.5"})");
  CAF_CHECK_LESS(std::abs(p50 - 2.0) / 2.0, 0.0303);
}

CAF_TEST(the recorder admits at most max_series series and reports what it refused) {
  rec = std::make_shared<metrics::recorder>(0.01, 2);
  start();
  auto& http = fam("http.request.duration");
  for (int i = 0; i < 5; ++i)
    rec->observe(http, {"GET", "/r" + std::to_string(i), "200"}, 0.001);
  rec->observe(http, {"GET", "/r0", "200"}, std::nan("")); // ignored, not a bucket
  CAF_CHECK_EQUAL(rec->pending(), 2u);
  tick();
  auto text = scrape();
  CAF_CHECK_EQUAL(sample_of(text, "troupe_metrics_series"), 2.0);
  CAF_CHECK_EQUAL(sample_of(text, "troupe_metrics_dropped_series_total"), 3.0);
  CAF_CHECK_EQUAL(
      sample_of(
          text,
          R"(troupe_http_request_duration_seconds_count{method="GET",route="/r0",status="200"})"),
      1.0);
  // Next interval: an admitted series keeps counting even when refused ones
  // arrive first; a refused one stays refused (counted once per interval).
  for (int i = 4; i >= 0; --i)
    rec->observe(http, {"GET", "/r" + std::to_string(i), "200"}, 0.001);
  tick();
  text = scrape();
  CAF_CHECK_EQUAL(sample_of(text, "troupe_metrics_series"), 2.0);
  CAF_CHECK_EQUAL(sample_of(text, "troupe_metrics_dropped_series_total"), 6.0);
  CAF_CHECK_EQUAL(
      sample_of(
          text,
          R"(troupe_http_request_duration_seconds_count{method="GET",route="/r0",status="200"})"),
      2.0);
}

CAF_TEST(request methods map to a fixed set of labels) {
  CAF_CHECK_EQUAL(metrics::method_label("GET"), "GET");
  CAF_CHECK_EQUAL(metrics::method_label("OPTIONS"), "OPTIONS");
  CAF_CHECK_EQUAL(metrics::method_label("PROPFIND"), "OTHER");
  CAF_CHECK_EQUAL(metrics::method_label("get"), "OTHER");
  CAF_CHECK_EQUAL(metrics::method_label(""), "OTHER");
}

CAF_TEST(the scrape cache holds for scrape_ttl) {
  metrics_config cfg;
  cfg.scrape_ttl = 10s;
  start(cfg);
  auto first = scrape();
  tick();
  CAF_CHECK_EQUAL(scrape(), first); // cached: the heartbeat has not moved
  tick(10);
  CAF_CHECK_NOT_EQUAL(scrape(), first);
}

CAF_TEST(the mapping renames exported families) {
  metrics_config cfg;
  cfg.mapping = R"({"jobs.queue.depth":{"name":"Processor/QueueDepth","unit":"Count"}})";
  start(cfg);
  caf::anon_send(registry, metric_deltas{gauge_delta("jobs.queue.depth", {}, 2)});
  consume_messages();
  auto text = scrape();
  CAF_CHECK_EQUAL(sample_of(text, "Processor_QueueDepth"), 2.0);
  CAF_CHECK(text.find("(unit: Count)") != std::string::npos);
  CAF_CHECK(text.find("troupe_job_queue_depth ") == std::string::npos);
}

CAF_TEST(a monitoring document reads back into the same series) {
  start();
  auto& http = fam("http.request.duration");
  for (int i = 1; i <= 20; ++i)
    rec->observe(http, {"GET", "/a", "200"}, i / 100.0);
  caf::anon_send(registry, metric_deltas{gauge_delta("sse.connections", {}, 3)});
  tick();
  auto doc = monitoring();
  std::string err;
  auto snaps = metrics::snapshots_from_monitoring(doc.dump(), &err);
  CAF_REQUIRE(snaps.has_value());
  CAF_CHECK_EQUAL(snaps->size(), doc["series"].size());
  bool found = false;
  for (auto& s : *snaps)
    if (s.family == "http.request.duration") {
      found = true;
      CAF_CHECK_EQUAL(s.labels, (std::vector<std::string>{"GET", "/a", "200"}));
      CAF_CHECK_EQUAL(s.count, 20u);
      CAF_REQUIRE_EQUAL(s.windows.size(), 3u);
      CAF_CHECK_EQUAL(s.windows[0].window, "1m");
      CAF_CHECK_EQUAL(s.windows[0].count, 20u);
    }
  CAF_CHECK(found);
  CAF_CHECK(!metrics::snapshots_from_monitoring("[1,2]", &err));
  CAF_CHECK(!err.empty());
  // Proxied series are re-exported with their upstream.
  caf::anon_send(registry, proxied_atom::value, std::string{"http://127.0.0.1:1"}, *snaps);
  consume_messages();
  auto text = scrape();
  CAF_CHECK_EQUAL(sample_of(text, R"(troupe_sse_connections{upstream="http://127.0.0.1:1"})"), 3.0);
}

CAF_TEST_FIXTURE_SCOPE_END()

CAF_TEST(published sse stats parse or are refused) {
  auto s = parse_sse_stat(R"({"count": 4, "ts": 1700000000.5})");
  CAF_REQUIRE(s.has_value());
  CAF_CHECK_EQUAL(s->count, 4.0);
  CAF_CHECK_EQUAL(s->ts, 1700000000.5);
  CAF_CHECK(parse_sse_stat(R"({"connections": 2, "timestamp": 1})").has_value());
  CAF_CHECK(!parse_sse_stat(R"({"count": 4})").has_value());
  CAF_CHECK(!parse_sse_stat(R"({"count": -1, "ts": 1})").has_value());
  CAF_CHECK(!parse_sse_stat("7").has_value());
  CAF_CHECK(!parse_sse_stat("not json").has_value());
}

CAF_TEST(the recorder hands out one delta per series and starts afresh) {
  metrics::recorder rec{0.01};
  auto& http = fam("http.request.duration");
  rec.observe(http, {"GET", "/a", "200"}, 0.001);
  rec.observe(http, {"GET", "/a", "200"}, 20.0); // beyond the last bound: +Inf bucket
  rec.observe(http, {"GET", "/b", "404"}, 0.002);
  CAF_CHECK_EQUAL(rec.pending(), 2u);
  auto ds = rec.take();
  CAF_CHECK_EQUAL(ds.size(), 2u);
  CAF_CHECK_EQUAL(rec.pending(), 0u);
  for (auto& d : ds)
    if (d.labels[1] == "/a") {
      CAF_REQUIRE_EQUAL(d.buckets.size(), http.bounds.size() + 1);
      CAF_CHECK_EQUAL(d.buckets.back(), 1u);
      auto agg = metrics::aggregate::decode(d.observations);
      CAF_REQUIRE(agg.has_value());
      CAF_CHECK_EQUAL(agg->count, 2u);
    }
}
