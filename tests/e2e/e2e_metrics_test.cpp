#define CAF_SUITE e2e_metrics
#include <caf/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "persistence/redis.hpp"
#include "runtime/ground/clock.hpp"
#include "support/capture_server.hpp"
#include "support/e2e.hpp"
#include "support/servers.hpp"

using namespace troupe;
using namespace troupe::e2e;
using nlohmann::json;

namespace {

using e2e::poll_until;

/// Runs promtool check metrics on `text`; returns its exit code and output.
std::pair<int, std::string> promtool_check(const std::string& text, const std::string& dir) {
  auto in = dir + "/scrape.txt";
  auto out = dir + "/promtool.out";
  std::ofstream{in} << text;
  auto cmd = "/usr/bin/promtool check metrics < " + in + " > " + out + " 2>&1";
  int rc = std::system(cmd.c_str());
  std::ifstream f{out};
  std::string output{std::istreambuf_iterator<char>{f}, std::istreambuf_iterator<char>{}};
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, output};
}

std::string redis_get(redis::client& c, const std::string& key) {
  std::string err;
  auto r = c.command({"GET", key}, &err);
  if (!r || r->type != redis::reply::kind::string)
    return {};
  return r->str;
}

void redis_set(redis::client& c, const std::string& key, const std::string& value) {
  std::string err;
  auto r = c.command({"SET", key, value, "EX", "60"}, &err);
  if (!r)
    CAF_FAIL("redis SET failed: " << err);
}

std::string stat_json(double count, double ts) {
  return json{{"count", count}, {"ts", ts}}.dump();
}

/// A fresh daemon with these environment variables.
daemon_options with_env(environment env) {
  daemon_options o;
  o.env = std::move(env);
  return o;
}

/// The state /readyz reports for one metrics exporter ("" if absent).
std::string exporter_state(uint16_t port, const std::string& which) {
  auto doc = get(port, "/readyz").json();
  if (doc.is_discarded())
    return {};
  auto st = doc["checks"]["metrics_exporter"][which]["status"];
  return st.is_string() ? st.get<std::string>() : std::string{};
}

double unix_now() {
  return static_cast<double>(now_ns()) / 1e9;
}

} // namespace

CAF_TEST(a live scrape passes promtool and shows requests jobs and windows) {
  scratch_dir dir{"troupe-e2e-metrics"};
  e2e::daemon d{with_env({{"TROUPE_METRICS__SAMPLE_INTERVAL", "100ms"}})};
  auto job = request(d.port(), "POST", "/jobs", {{"Content-Type", "application/json"}},
                     R"({"name":"m","command":"echo hi"})");
  CAF_REQUIRE_EQUAL(job.status, 201);
  auto id = json_field(job, "/job_id");
  CAF_REQUIRE(poll_until(
      [&] { return json_field(get(d.port(), "/jobs/" + id), "/status") == "succeeded"; }));
  CAF_CHECK_EQUAL(get(d.port(), "/jobs?limit=1").status, 200);
  CAF_CHECK_EQUAL(get(d.port(), "/no/such/route").status, 404);
  std::string text;
  CAF_REQUIRE(poll_until([&] {
    auto res = get(d.port(), "/metrics");
    text = res.body;
    // The recorder is drained on the registry's tick: wait for the GET and
    // the 404 too, not only for the earlier POST.
    return res.status == 200 &&
           contains(text,
                    R"(troupe_http_requests_total{method="POST",route="/jobs",status="201"} 1)") &&
           contains(text, "troupe_job_run_duration_seconds_count 1") &&
           contains(text, R"(route="unmatched",status="404")") &&
           contains(text, R"(method="GET",route="/jobs",status="200")");
  }));
  auto res = get(d.port(), "/metrics");
  CAF_CHECK_EQUAL(res.header("content-type").value_or(""),
                  "text/plain; version=0.0.4; charset=utf-8");
  CAF_CHECK(contains(text, R"(route="unmatched",status="404")"));
  CAF_CHECK(contains(text, R"(troupe_job_queue_wait_seconds_bucket{le="+Inf"} 1)"));
  CAF_CHECK(contains(
      text,
      R"(troupe_http_request_duration_seconds_window{method="GET",route="/jobs",status="200",window="1m",quantile="0.99"})"));
  CAF_CHECK(contains(text, "troupe_last_activity_timestamp_seconds "));
  CAF_CHECK(contains(text, "troupe_sse_connections "));
  auto [rc, out] = promtool_check(res.body, dir.path());
  CAF_CHECK_EQUAL(rc, 0);
  CAF_CHECK_EQUAL(out, "");
  // The JSON view: the seed's summary plus every series.
  auto mon = get(d.port(), "/monitoring/system");
  CAF_REQUIRE_EQUAL(mon.status, 200);
  auto doc = mon.json();
  CAF_CHECK_EQUAL(doc["system"]["task_latency"]["count"].get<uint64_t>(), 1u);
  CAF_CHECK_EQUAL(doc["system"]["queue_wait"]["count"].get<uint64_t>(), 1u);
  CAF_CHECK(doc["system"]["rest_latency"]["windows"]["1m"]["p99"].is_number());
  CAF_CHECK(doc["series"].size() >= 5u);
}

CAF_TEST(a real prometheus server scrapes troupe) {
  scratch_dir dir{"troupe-e2e-prom"};
  e2e::daemon d;
  auto yaml = "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: troupe\n"
              "    static_configs:\n      - targets: ['127.0.0.1:" +
              std::to_string(d.port()) + "']\n";
  std::string err;
  auto prom = test::start_prometheus(dir.path(), yaml, 0, &err);
  if (!(prom.has_value()))
    CAF_FAIL(err);
  std::string body;
  bool seen = poll_until(
      [&] {
        unsigned status = 0;
        body = test::http_get(prom->port(), "/api/v1/query?query=troupe_heartbeat_total", &status);
        auto doc = json::parse(body, nullptr, false);
        return status == 200 && !doc.is_discarded() && doc["data"]["result"].size() == 1 &&
               doc["data"]["result"][0]["metric"]["job"] == "troupe";
      },
      60s);
  if (!(seen))
    CAF_ERROR("prometheus never returned troupe_heartbeat_total: " << body);
  // Prometheus judged every scrape healthy.
  unsigned status = 0;
  auto targets =
      json::parse(test::http_get(prom->port(), "/api/v1/targets", &status), nullptr, false);
  CAF_REQUIRE(!targets.is_discarded());
  CAF_CHECK_EQUAL(targets["data"]["activeTargets"][0]["health"], "up");
}

CAF_TEST(the pushgateway receives the group and loses it at shutdown) {
  scratch_dir dir{"troupe-e2e-push"};
  std::string err;
  auto gw = test::start_pushgateway(dir.path(), 0, &err);
  if (!(gw.has_value()))
    CAF_FAIL(err);
  e2e::daemon d{
      with_env({{"TROUPE_METRICS__PUSHGATEWAY__URL", gw->base_url()},
                {"TROUPE_METRICS__PUSHGATEWAY__GROUPING", R"({"tenant":"acme/eu","project":"p1"})"},
                {"TROUPE_METRICS__EXPORT_INTERVAL", "300ms"}})};
  std::string text;
  bool pushed = poll_until([&] {
    text = test::http_get(gw->port(), "/metrics");
    return contains(text, "troupe_heartbeat_total{") && contains(text, R"(tenant="acme/eu")") &&
           contains(text, R"(project="p1")") && contains(text, R"(job="troupe")");
  });
  if (!(pushed))
    CAF_ERROR("no troupe group on the pushgateway: " << text);
  // The state is set once the push has returned (the gateway has the group a
  // moment before).
  CAF_CHECK(poll_until([&] { return exporter_state(d.port(), "pushgateway") == "ok"; }));
  d.terminate();
  auto st = d.wait_exit(30s);
  CAF_REQUIRE(st.has_value());
  CAF_CHECK(st->exited_with(0));
  text = test::http_get(gw->port(), "/metrics");
  if (!(!contains(text, "troupe_heartbeat_total")))
    CAF_ERROR("group still there: " << text);
}

CAF_TEST(metrics export once pushes and exits and fails when the gateway is away) {
  scratch_dir dir{"troupe-e2e-once"};
  std::string err;
  auto gw = test::start_pushgateway(dir.path(), 0, &err);
  if (!(gw.has_value()))
    CAF_FAIL(err);
  auto ok = run_troupe({"metrics", "export", "--once"},
                       {{"TROUPE_METRICS__PUSHGATEWAY__URL", gw->base_url()},
                        {"TROUPE_METRICS__PUSHGATEWAY__JOB", "nightly"}});
  CAF_REQUIRE(ok.status.has_value());
  if (!ok.status->exited_with(0))
    CAF_ERROR("export --once failed: " << ok.out << ok.err);
  CAF_CHECK(contains(ok.out, R"("ok":true)"));
  // A one-shot export leaves its group for the next scrape.
  CAF_CHECK(contains(test::http_get(gw->port(), "/metrics"), R"(job="nightly")"));
  gw->stop();
  auto bad = run_troupe({"metrics", "export", "--once"},
                        {{"TROUPE_METRICS__PUSHGATEWAY__URL", gw->base_url()},
                         {"TROUPE_METRICS__PUSHGATEWAY__TIMEOUT", "2s"}});
  CAF_REQUIRE(bad.status.has_value());
  CAF_CHECK(bad.status->exited_with(1));
  CAF_CHECK(contains(bad.out, R"("status":"failing")"));
}

CAF_TEST(redis mode folds published stats writes windows back and survives a redis restart) {
  scratch_dir dir{"troupe-e2e-redis"};
  std::string err;
  auto rs = test::start_redis(dir.path(), 0, &err);
  if (!(rs.has_value()))
    CAF_FAIL(err);
  auto port = rs->port();
  redis::url_parts where;
  where.host = "127.0.0.1";
  where.port = port;
  redis::client c{where, 2s};
  const std::string base = "tr:acme:web:";
  redis_set(c, base + "sse:connections:i-1:100", stat_json(3, unix_now()));
  redis_set(c, base + "sse:connections:i-2:200", stat_json(4, unix_now()));
  redis_set(c, base + "sse:connections:i-3:300", stat_json(100, unix_now() - 3600)); // stale
  redis_set(c, base + "sse:connections:i-4:400", "garbage");
  redis_set(c, base + "sse:connections:i-5:500", stat_json(10, unix_now() * 1000));   // in ms
  redis_set(c, base + "sse:connections:i-6:600", stat_json(1000, unix_now() + 3600)); // future
  redis_set(c, "tr:other:web:sse:connections:i-9:1", stat_json(50, unix_now())); // other tenant
  e2e::daemon d{
      with_env({{"TROUPE_METRICS__MODE", "redis"},
                {"TROUPE_METRICS__REDIS__URL", "redis://127.0.0.1:" + std::to_string(port)},
                {"TROUPE_METRICS__REDIS__PREFIX", "tr"},
                {"TROUPE_METRICS__REDIS__TENANT", "acme"},
                {"TROUPE_METRICS__REDIS__PROJECT", "web"},
                {"TROUPE_METRICS__REDIS__TIMEOUT", "500ms"},
                {"TROUPE_METRICS__EXPORT_INTERVAL", "300ms"}})};
  const auto key = base + "metrics:redis.sse.connections{tenant=acme,project=web}";
  json doc;
  CAF_REQUIRE(poll_until([&] {
    doc = json::parse(redis_get(c, key), nullptr, false);
    return !doc.is_discarded() && doc.value("value", 0.0) == 17.0;
  }));
  CAF_CHECK_EQUAL(doc["windows"]["1m"]["max"].get<double>(), 17.0);
  auto ttl = c.command({"PTTL", key}, &err);
  CAF_REQUIRE(ttl.has_value());
  CAF_CHECK(ttl->integer > 0 && ttl->integer <= 120'000);
  // troupe's own series are written back too.
  CAF_CHECK(poll_until([&] { return !redis_get(c, base + "metrics:sse.connections").empty(); }));
  CAF_CHECK(contains(get(d.port(), "/metrics").body,
                     R"(troupe_redis_sse_connections{tenant="acme",project="web"} 17)"));
  // The exporter marks itself ok once a cycle's last key is written (the
  // key read above may be an earlier one of that cycle).
  CAF_CHECK(poll_until([&] { return exporter_state(d.port(), "redis") == "ok"; }));
  // Redis goes away: troupe says so, keeps serving, and recovers on its own.
  rs->kill9();
  std::string ready;
  if (!poll_until([&] {
        ready = exporter_state(d.port(), "redis");
        return ready == "failing";
      }))
    CAF_ERROR("readyz never showed redis failing: " << ready << "\n" << d.output_text());
  std::filesystem::create_directories(dir.path() + "/again");
  auto again = test::start_redis(dir.path() + "/again", port, &err);
  if (!(again.has_value()))
    CAF_FAIL(err);
  redis_set(c, base + "sse:connections:i-1:100", stat_json(5, unix_now()));
  CAF_CHECK(poll_until([&] {
    doc = json::parse(redis_get(c, key), nullptr, false);
    return !doc.is_discarded() && doc.value("value", 0.0) == 5.0;
  }));
  CAF_CHECK(poll_until([&] { return exporter_state(d.port(), "redis") == "ok"; }));
}

CAF_TEST(proxy mode re - exports upstreams with the auth header) {
  e2e::daemon upstream;
  CAF_REQUIRE_EQUAL(get(upstream.port(), "/jobs").status, 200);
  std::string doc;
  CAF_REQUIRE(poll_until([&] {
    doc = get(upstream.port(), "/monitoring/system").body;
    return contains(doc, R"("route":"/jobs")");
  }));
  test::capture_server second;
  second.set_default({200, {{"Content-Type", "application/json"}}, doc});
  auto up = "http://127.0.0.1:" + std::to_string(upstream.port());
  e2e::daemon proxy{
      with_env({{"TROUPE_METRICS__MODE", "proxy"},
                {"TROUPE_METRICS__PROXY__URLS", up + "," + second.url()},
                {"TROUPE_METRICS__PROXY__AUTH_HEADER_NAME", "Authorization"},
                // The upstream needs its read token for /monitoring/system.
                {"TROUPE_METRICS__PROXY__AUTH_HEADER_VALUE", "Bearer " + upstream.token()},
                {"TROUPE_METRICS__EXPORT_INTERVAL", "300ms"}})};
  std::string text;
  CAF_CHECK(poll_until([&] {
    text = get(proxy.port(), "/metrics").body;
    return contains(text, R"(route="/jobs",status="200",upstream=")" + up + "\"") &&
           contains(text, R"(route="/jobs",status="200",upstream=")" + second.url() + "\"");
  }));
  CAF_REQUIRE(second.wait_for(1, 10s));
  auto req = second.requests().front();
  CAF_CHECK_EQUAL(req.target, "/monitoring/system");
  CAF_CHECK_EQUAL(req.headers["authorization"], "Bearer " + upstream.token());
  // The proxy's own requests are not exported as local series.
  CAF_CHECK(!contains(text, R"(route="/metrics",status="200"})"));
  scratch_dir dir{"troupe-e2e-proxy"};
  auto [rc, out] = promtool_check(text, dir.path());
  CAF_CHECK_EQUAL(rc, 0);
  CAF_CHECK_EQUAL(out, "");
  // An upstream that starts failing loses its series instead of being
  // re-exported stale; the healthy one stays.
  second.set_default({503, {}, "down"});
  CAF_CHECK(poll_until([&] {
    text = get(proxy.port(), "/metrics").body;
    return !contains(text, "upstream=\"" + second.url() + "\"");
  }));
  CAF_CHECK(contains(text, R"(route="/jobs",status="200",upstream=")" + up + "\""));
}
