#define CAF_SUITE servers
#include "support/dsl.hpp"

#include "actors/metrics/prometheus.hpp"
#include "http/http_client.hpp"
#include "support/servers.hpp"
#include "support/temp_dir.hpp"

#include <signal.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

using namespace std::chrono_literals;
using namespace troupe;
using nlohmann::json;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string subdir(const test::temp_dir& dir, const std::string& name) {
  auto path = dir / name;
  std::filesystem::create_directory(path);
  return path;
}

/// The value of `query`'s first series once Prometheus has one, polled until
/// `deadline`; empty JSON if none by then.
json poll_query(uint16_t port, const std::string& query_target,
                std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    unsigned status = 0;
    auto body = test::http_get(port, query_target, &status);
    if (status == 200) {
      auto doc = json::parse(body, nullptr, false);
      if (!doc.is_discarded() && doc.value("status", "") == "success" &&
          !doc["data"]["result"].empty())
        return doc["data"]["result"][0];
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return {};
    std::this_thread::sleep_for(100ms);
  }
}

} // namespace

CAF_TEST(stop and kill9 reap the server) {
  test::temp_dir dir;
  std::string error;
  auto server = test::start_redis(dir.path(), 0, &error);
  CAF_REQUIRE_EQUAL(error, "");
  CAF_REQUIRE(server);
  auto pid = server->pid();
  CAF_CHECK(server->running());
  CAF_CHECK_EQUAL(::kill(pid, 0), 0);
  server->stop();
  CAF_CHECK(!server->running());
  // Reaped: the pid is gone, not a zombie.
  CAF_CHECK_EQUAL(::kill(pid, 0), -1);
  server->stop(); // idempotent
  auto again = test::start_redis(dir.path(), 0, &error);
  CAF_REQUIRE(again);
  pid = again->pid();
  again->kill9();
  CAF_CHECK(!again->running());
  CAF_CHECK_EQUAL(::kill(pid, 0), -1);
}

CAF_TEST(a server that cannot start is reported with its log) {
  test::temp_dir dir;
  std::string error;
  auto first = test::start_redis(dir.path(), 0, &error);
  CAF_REQUIRE(first);
  // The port is taken by the first one.
  auto second = test::start_redis(dir.path(), first->port(), &error);
  CAF_CHECK(!second);
  CAF_CHECK(contains(error, "/usr/bin/redis-server exited"));
  CAF_CHECK(contains(error, "Address already in use"));
  // The first gateway answers /-/ready on that port: only the second one's
  // own log may count.
  auto gateway = test::start_pushgateway(subdir(dir, "gw1"), 0, &error);
  CAF_REQUIRE(gateway);
  auto taken = test::start_pushgateway(subdir(dir, "gw2"), gateway->port(), &error);
  CAF_CHECK(!taken);
  CAF_CHECK(contains(error, "/usr/bin/prometheus-pushgateway exited"));
  CAF_CHECK(contains(error, "address already in use"));
}

CAF_TEST(pushgateway keeps a push and prometheus scrapes it) {
  test::temp_dir dir;
  std::string error;
  auto gateway = test::start_pushgateway(subdir(dir, "pushgateway"), 0, &error);
  CAF_REQUIRE_EQUAL(error, "");
  CAF_REQUIRE(gateway);
  CAF_REQUIRE_NOT_EQUAL(gateway->port(), 0);
  prom::writer w;
  w.family("troupe_test_pushes_total", "counter", "Pushes from the servers test.");
  w.sample("troupe_test_pushes_total", {{"kind", "a \"quoted\" value"}}, 3);
  auto path = prom::pushgateway_path("t", {{"instance", "node/1"}});
  CAF_CHECK_EQUAL(path, "/metrics/job/t/instance@base64/bm9kZS8x");
  auto base = http::parse_url(gateway->base_url(), &error);
  CAF_REQUIRE(base);
  auto put = http::fetch(*base, "PUT", path, {{"Content-Type", "text/plain; version=0.0.4"}},
                         w.text(), 5s);
  CAF_CHECK_EQUAL(put.error, "");
  CAF_CHECK_EQUAL(put.status, 200u);
  unsigned status = 0;
  auto metrics = test::http_get(gateway->port(), "/metrics", &status);
  CAF_CHECK_EQUAL(status, 200u);
  CAF_CHECK(contains(metrics, "troupe_test_pushes_total{instance=\"node/1\",job=\"t\","
                              "kind=\"a \\\"quoted\\\" value\"} 3\n"));

  auto config = "global:\n"
                "  scrape_interval: 1s\n"
                "scrape_configs:\n"
                "  - job_name: pushgateway\n"
                "    honor_labels: true\n"
                "    static_configs:\n"
                "      - targets: ['127.0.0.1:" +
                std::to_string(gateway->port()) + "']\n";
  auto prometheus = test::start_prometheus(subdir(dir, "prometheus"), config, 0, &error);
  CAF_REQUIRE_EQUAL(error, "");
  CAF_REQUIRE(prometheus);
  CAF_REQUIRE_NOT_EQUAL(prometheus->port(), 0);
  // troupe_test_pushes_total{job="t"}
  auto series = poll_query(prometheus->port(),
                           "/api/v1/query?query=troupe_test_pushes_total%7Bjob%3D%22t%22%7D",
                           std::chrono::steady_clock::now() + 20s);
  CAF_REQUIRE(!series.is_null());
  CAF_CHECK_EQUAL(series["metric"].value("instance", ""), "node/1");
  CAF_CHECK_EQUAL(series["metric"].value("kind", ""), "a \"quoted\" value");
  CAF_CHECK_EQUAL(series["value"][1].get<std::string>(), "3");
}
