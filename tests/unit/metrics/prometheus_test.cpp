#define CAF_SUITE prometheus
#include "support/dsl.hpp"

#include "actors/metrics/prometheus.hpp"
#include "support/temp_dir.hpp"

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

using namespace troupe;
using prom::format_value;
using prom::labels;

namespace {

/// What `promtool check metrics` says about an exposition.
struct lint_result {
  int exit_code = -1;
  std::string output; ///< stdout and stderr together
};

lint_result promtool_check(const std::string& exposition) {
  test::temp_dir dir;
  auto file = dir / "metrics.prom";
  std::ofstream{file} << exposition;
  lint_result out;
  auto cmd = "/usr/bin/promtool check metrics < '" + file + "' 2>&1";
  auto* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr)
    return out;
  char buf[512];
  while (auto n = std::fread(buf, 1, sizeof(buf), pipe))
    out.output.append(buf, n);
  auto status = ::pclose(pipe);
  if (status != -1 && WIFEXITED(status))
    out.exit_code = WEXITSTATUS(status);
  return out;
}

/// A page with every kind of family and label values that need escaping.
std::string sample_exposition() {
  prom::writer w;
  w.family("troupe_http_requests_total", "counter", "HTTP requests by route.\nCounted on reply.");
  w.sample("troupe_http_requests_total", {{"method", "GET"}, {"route", "/jobs/\"x\"\\y\nz"}}, 7);
  w.sample("troupe_http_requests_total", {{"method", "POST"}, {"route", "/jobs"}}, 1234567);
  w.family("troupe_queue_length", "gauge", "Jobs waiting.");
  w.sample("troupe_queue_length", {}, 3);
  w.sample("troupe_queue_length", {{"queue", "ünïcode"}}, -0.5);
  w.family("troupe_job_duration_seconds", "histogram", "Job run time.");
  w.histogram("troupe_job_duration_seconds", {{"job", "build"}}, {0.005, 0.1, 1, 10}, {1, 2, 0, 3},
              12.75, 7);
  w.family("troupe_rpc_latency_seconds", "summary", "RPC latency.");
  w.sample("troupe_rpc_latency_seconds", {{"quantile", "0.5"}}, 0.0125);
  w.sample("troupe_rpc_latency_seconds_sum", {}, 1.5e-07);
  w.sample("troupe_rpc_latency_seconds_count", {}, 10);
  w.family("troupe_build_info", "untyped", "Build facts.");
  w.sample("troupe_build_info", {{"version", "0.1.0"}}, 1);
  return w.take();
}

} // namespace

CAF_TEST(names are validated and sanitized) {
  CAF_CHECK(prom::valid_metric_name("troupe_jobs_total"));
  CAF_CHECK(prom::valid_metric_name("job:rate5m"));
  CAF_CHECK(prom::valid_metric_name("_x"));
  CAF_CHECK(!prom::valid_metric_name(""));
  CAF_CHECK(!prom::valid_metric_name("5xx"));
  CAF_CHECK(!prom::valid_metric_name("a-b"));
  CAF_CHECK(prom::valid_label_name("route"));
  CAF_CHECK(prom::valid_label_name("_x"));
  CAF_CHECK(!prom::valid_label_name("__name__"));
  CAF_CHECK(!prom::valid_label_name("a:b"));
  CAF_CHECK(!prom::valid_label_name("1a"));
  CAF_CHECK(!prom::valid_label_name(""));
  CAF_CHECK_EQUAL(prom::sanitize_name("http.requests-total"), "http_requests_total");
  CAF_CHECK_EQUAL(prom::sanitize_name("5xx"), "_5xx");
  CAF_CHECK_EQUAL(prom::sanitize_name("a:b"), "a:b");
  CAF_CHECK_EQUAL(prom::sanitize_name(""), "_");
  CAF_CHECK(prom::valid_metric_name(prom::sanitize_name("ü 9")));
}

CAF_TEST(label values and help text are escaped) {
  CAF_CHECK_EQUAL(prom::escape_label_value("a\\b\"c\nd"), R"(a\\b\"c\nd)");
  CAF_CHECK_EQUAL(prom::escape_label_value("tab\tstays"), "tab\tstays");
  CAF_CHECK_EQUAL(prom::escape_help("a\\b\"c\nd"), R"(a\\b"c\nd)");
}

CAF_TEST(values are formatted like Go shortest g) {
  CAF_CHECK_EQUAL(format_value(std::numeric_limits<double>::quiet_NaN()), "NaN");
  CAF_CHECK_EQUAL(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  CAF_CHECK_EQUAL(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  CAF_CHECK_EQUAL(format_value(0), "0");
  CAF_CHECK_EQUAL(format_value(1), "1");
  CAF_CHECK_EQUAL(format_value(-42), "-42");
  CAF_CHECK_EQUAL(format_value(1234567), "1234567");
  CAF_CHECK_EQUAL(format_value(999999999999999), "999999999999999");
  CAF_CHECK_EQUAL(format_value(1e15), "1e+15");
  CAF_CHECK_EQUAL(format_value(1e300), "1e+300");
  CAF_CHECK_EQUAL(format_value(0.005), "0.005");
  CAF_CHECK_EQUAL(format_value(1.5e-07), "1.5e-07");
  CAF_CHECK_EQUAL(format_value(0.0001), "0.0001");
  CAF_CHECK_EQUAL(format_value(0.00001), "1e-05");
  CAF_CHECK_EQUAL(format_value(0.1 + 0.2), "0.30000000000000004");
  CAF_CHECK_EQUAL(format_value(-2.25), "-2.25");
  CAF_CHECK_EQUAL(format_value(123456.5), "123456.5");
  CAF_CHECK_EQUAL(format_value(1234567.5), "1.2345675e+06");
  CAF_CHECK_EQUAL(format_value(5e-324), "5e-324");
  for (double v : {0.1, 1.0 / 3, 2.5e-300, 6.02214076e23, -1e-7, 123456.789})
    CAF_CHECK_EQUAL(std::stod(format_value(v)), v);
}

CAF_TEST(families and samples render as text format 0.0.4) {
  prom::writer w;
  w.family("jobs_total", "counter", "Jobs run.\nAll of them.");
  w.sample("jobs_total", {{"state", "ok"}, {"node", "a\"b"}}, 3);
  w.sample("jobs_total", {}, 0.5);
  w.family("up", "gauge", "");
  w.sample("up", {}, 1);
  CAF_CHECK_EQUAL(w.error(), "");
  CAF_CHECK_EQUAL(w.text(), "# HELP jobs_total Jobs run.\\nAll of them.\n"
                            "# TYPE jobs_total counter\n"
                            "jobs_total{state=\"ok\",node=\"a\\\"b\"} 3\n"
                            "jobs_total 0.5\n"
                            "# HELP up\n"
                            "# TYPE up gauge\n"
                            "up 1\n");
  auto text = w.take();
  CAF_CHECK(!text.empty());
  CAF_CHECK_EQUAL(w.text(), "");
  // take() forgets the families: the next page may declare them again.
  w.family("up", "gauge", "Up.");
  CAF_CHECK_EQUAL(w.error(), "");
}

CAF_TEST(histograms accumulate the count of each bucket) {
  prom::writer w;
  w.family("run_seconds", "histogram", "Run time.");
  w.histogram("run_seconds", {{"job", "x"}}, {0.005, 0.5, 1e6}, {1, 0, 4}, 2.5, 6);
  CAF_CHECK_EQUAL(w.error(), "");
  CAF_CHECK_EQUAL(w.text(), "# HELP run_seconds Run time.\n"
                            "# TYPE run_seconds histogram\n"
                            "run_seconds_bucket{job=\"x\",le=\"0.005\"} 1\n"
                            "run_seconds_bucket{job=\"x\",le=\"0.5\"} 1\n"
                            "run_seconds_bucket{job=\"x\",le=\"1000000\"} 5\n"
                            "run_seconds_bucket{job=\"x\",le=\"+Inf\"} 6\n"
                            "run_seconds_sum{job=\"x\"} 2.5\n"
                            "run_seconds_count{job=\"x\"} 6\n");
  prom::writer empty;
  empty.family("idle_seconds", "histogram", "Idle.");
  empty.histogram("idle_seconds", {}, {}, {}, 0, 0);
  CAF_CHECK_EQUAL(empty.text(), "# HELP idle_seconds Idle.\n"
                                "# TYPE idle_seconds histogram\n"
                                "idle_seconds_bucket{le=\"+Inf\"} 0\n"
                                "idle_seconds_sum 0\n"
                                "idle_seconds_count 0\n");
}

CAF_TEST(the writer refuses invalid expositions) {
  auto refused = [](auto&& misuse, const std::string& expected) {
    prom::writer w;
    w.family("a_seconds", "histogram", "A.");
    auto before = w.text();
    misuse(w);
    CAF_CHECK_EQUAL(w.text(), before);
    CAF_CHECK_NOT_EQUAL(w.error().find(expected), std::string::npos);
    if (w.error().find(expected) == std::string::npos)
      CAF_MESSAGE("error was: " << w.error());
  };
  refused([](prom::writer& w) { w.family("a_seconds", "gauge", "again"); }, "declared twice");
  refused([](prom::writer& w) { w.family("b", "counters", "B."); }, "unknown type");
  refused([](prom::writer& w) { w.family("1b", "gauge", "B."); }, "invalid metric name");
  refused([](prom::writer& w) { w.sample("other", {}, 1); }, "does not belong");
  refused([](prom::writer& w) { w.sample("a_seconds_total", {}, 1); }, "does not belong");
  refused(
      [](prom::writer& w) {
        w.sample("a_seconds_sum", {{"__x", "1"}}, 1);
      },
      "invalid label name");
  refused(
      [](prom::writer& w) {
        w.sample("a_seconds_sum", {{"x", "1"}, {"x", "2"}}, 1);
      },
      "repeated");
  refused(
      [](prom::writer& w) {
        w.histogram("a_seconds", {{"le", "1"}}, {}, {}, 0, 0);
      },
      "reserved");
  refused(
      [](prom::writer& w) {
        w.histogram("a_seconds", {}, {1, 1}, {0, 0}, 0, 0);
      },
      "strictly increasing");
  refused(
      [](prom::writer& w) {
        w.histogram("a_seconds", {}, {1, 2}, {1}, 0, 1);
      },
      "bucket counts");
  refused(
      [](prom::writer& w) {
        w.histogram("a_seconds", {}, {1, 2}, {1, 1}, 0, 1);
      },
      "more than count");
  prom::writer none;
  none.sample("x", {}, 1);
  CAF_CHECK_NOT_EQUAL(none.error().find("before any family"), std::string::npos);
  prom::writer gauge;
  gauge.family("g", "gauge", "G.");
  gauge.histogram("g", {}, {}, {}, 0, 0);
  CAF_CHECK_NOT_EQUAL(gauge.error().find("does not belong"), std::string::npos);
}

CAF_TEST(pushgateway paths encode the grouping key) {
  using prom::pushgateway_path;
  CAF_CHECK_EQUAL(pushgateway_path("troupe", {}), "/metrics/job/troupe");
  CAF_CHECK_EQUAL(pushgateway_path("t", {{"instance", "a/b"}}),
                  "/metrics/job/t/instance@base64/YS9i");
  CAF_CHECK_EQUAL(pushgateway_path("a/b", {{"node", "n1"}}), "/metrics/job@base64/YS9i/node/n1");
  CAF_CHECK_EQUAL(pushgateway_path("", {}), "/metrics/job@base64/=");
  CAF_CHECK_EQUAL(pushgateway_path("t", {{"instance", ""}}), "/metrics/job/t/instance@base64/=");
  // URL-safe alphabet: '-' and '_' where standard base64 has '+' and '/'.
  CAF_CHECK_EQUAL(pushgateway_path("t", {{"x", "\xfb\xff/"}}), "/metrics/job/t/x@base64/-_8v");
  CAF_CHECK_EQUAL(pushgateway_path("t", {{"x", "."}, {"y", ".."}}),
                  "/metrics/job/t/x@base64/Lg==/y@base64/Li4=");
  CAF_CHECK_EQUAL(pushgateway_path("t", {{"x", "a b%c?ü"}, {"y", "A-Z_a.z~0"}}),
                  "/metrics/job/t/x/a%20b%25c%3F%C3%BC/y/A-Z_a.z~0");
}

CAF_TEST(promtool accepts the writer output without warnings) {
  auto text = sample_exposition();
  auto lint = promtool_check(text);
  CAF_CHECK_EQUAL(lint.exit_code, 0);
  CAF_CHECK_EQUAL(lint.output, "");
  // The page did exercise escaping and every family type.
  CAF_CHECK_NOT_EQUAL(text.find(R"(route="/jobs/\"x\"\\y\nz")"), std::string::npos);
  CAF_CHECK_NOT_EQUAL(text.find("# HELP troupe_http_requests_total HTTP requests by route.\\n"),
                      std::string::npos);
  CAF_CHECK_NOT_EQUAL(text.find("troupe_job_duration_seconds_bucket{job=\"build\",le=\"10\"} 6\n"),
                      std::string::npos);
}

CAF_TEST(promtool reports broken expositions) {
  // A lint problem: a counter without "_total" (exit 3).
  prom::writer w;
  w.family("troupe_http_requests", "counter", "Requests.");
  w.sample("troupe_http_requests", {}, 1);
  CAF_REQUIRE_EQUAL(w.error(), "");
  auto lint = promtool_check(w.text());
  CAF_CHECK_EQUAL(lint.exit_code, 3);
  CAF_CHECK_EQUAL(lint.output,
                  "troupe_http_requests counter metrics should have \"_total\" suffix\n");
  // A parse error the writer refuses to produce: a family declared twice.
  auto twice = w.text() + w.text();
  w.family("troupe_http_requests", "counter", "Requests.");
  CAF_CHECK_NOT_EQUAL(w.error(), "");
  lint = promtool_check(twice);
  CAF_CHECK_EQUAL(lint.exit_code, 1);
  CAF_CHECK_NOT_EQUAL(lint.output.find("second HELP line"), std::string::npos);
  // No help text and a unit that is not a base unit, both lint problems.
  lint = promtool_check("# TYPE troupe_wait_milliseconds gauge\ntroupe_wait_milliseconds 1\n");
  CAF_CHECK_EQUAL(lint.exit_code, 3);
  CAF_CHECK_NOT_EQUAL(lint.output.find("no help text"), std::string::npos);
  CAF_CHECK_NOT_EQUAL(lint.output.find("use base unit \"seconds\""), std::string::npos);
}
