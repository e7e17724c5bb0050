#define CAF_SUITE e2e_http

#include "support/dsl.hpp"

#include "support/e2e.hpp"

#include <regex>
#include <string>

#include <boost/version.hpp>
#include <caf/config.hpp>
#include <lmdb.h>
#include <nlohmann/json.hpp>
#include <openssl/opensslv.h>
#include <spdlog/version.h>

using namespace troupe::e2e;
namespace e2e = troupe::e2e; // e2e::daemon: unistd.h declares ::daemon()

namespace {

daemon_options small_body_limit() {
  daemon_options opts;
  opts.env = {{"TROUPE_HTTP__MAX_JSON_BYTES", "1024"}, {"TROUPE_JOBS__MAX_ARCHIVE_BYTES", "1024"}};
  return opts;
}

/// A fresh daemon per test, with a small body limit for the 413 case.
struct fixture {
  e2e::daemon node{small_body_limit()};
  uint16_t port = node.port();
};

bool is_json(const response& res) {
  return contains(res.header("Content-Type").value_or(""), "application/json");
}

/// A minimal request as a client would write it by hand.
std::string raw_get(const std::string& target, const std::string& request_id, bool close = false) {
  return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: " + request_id + "\r\n" +
         (close ? "Connection: close\r\n" : "") + "\r\n";
}

bool is_rfc3339(const std::string& ts) {
  static const std::regex re{R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$)"};
  return std::regex_match(ts, re);
}

} // namespace

CAF_TEST_FIXTURE_SCOPE(e2e_http_tests, fixture)

CAF_TEST(healthz reports ok as JSON) {
  auto res = get(port, "/healthz");
  CAF_CHECK_EQUAL(res.status, 200);
  CAF_CHECK(is_json(res));
  CAF_CHECK_EQUAL(res.json().dump(), R"({"status":"ok"})");
}

CAF_TEST(readyz reports every check and the store) {
  auto res = get(port, "/readyz");
  CAF_CHECK_EQUAL(res.status, 200);
  CAF_CHECK(is_json(res));
  CAF_CHECK_EQUAL(json_field(res, "/status"), "ready");
  CAF_CHECK_EQUAL(json_field(res, "/checks/store/status"), "ok");
}

CAF_TEST(version names the build and the schema) {
  auto res = get(port, "/version");
  CAF_CHECK_EQUAL(res.status, 200);
  CAF_CHECK(is_json(res));
  auto body = res.json();
  CAF_CHECK(body.is_object() && body.contains("version") && body["version"].is_string() &&
            !body["version"].get<std::string>().empty());
  CAF_CHECK(body.is_object() && body.contains("git_sha") && body["git_sha"].is_string());
  CAF_CHECK(body.is_object() && body.contains("schema_version"));
}

CAF_TEST(version names the libraries as their headers do) {
  auto body = get(port, "/version").json();
  auto dotted = [](int major, int minor, int patch) {
    return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  };
  CAF_CHECK_EQUAL(body.value("caf", ""),
                  dotted(CAF_VERSION / 10000, CAF_VERSION / 100 % 100, CAF_VERSION % 100));
  CAF_CHECK_EQUAL(body.value("boost", ""), std::to_string(BOOST_VERSION / 100000) + "." +
                                               std::to_string(BOOST_VERSION / 100 % 1000));
  CAF_CHECK_EQUAL(body.value("nlohmann_json", ""),
                  dotted(NLOHMANN_JSON_VERSION_MAJOR, NLOHMANN_JSON_VERSION_MINOR,
                         NLOHMANN_JSON_VERSION_PATCH));
  CAF_CHECK_EQUAL(body.value("spdlog", ""),
                  dotted(SPDLOG_VER_MAJOR, SPDLOG_VER_MINOR, SPDLOG_VER_PATCH));
  CAF_CHECK_EQUAL(body.value("lmdb", ""),
                  dotted(MDB_VERSION_MAJOR, MDB_VERSION_MINOR, MDB_VERSION_PATCH));
  CAF_CHECK_EQUAL(body.value("openssl", ""), OPENSSL_VERSION_STR);
}

CAF_TEST(an unknown route is a JSON 404) {
  auto res = get(port, "/no/such/route");
  CAF_CHECK_EQUAL(res.status, 404);
  CAF_CHECK(is_json(res));
  CAF_CHECK_EQUAL(json_field(res, "/error/code"), "not_found");
  CAF_CHECK(res.json().contains("error") && res.json()["error"].contains("message"));
}

CAF_TEST(a wrong method is a 405 that lists the allowed ones) {
  auto res = request(port, "DELETE", "/healthz");
  CAF_CHECK_EQUAL(res.status, 405);
  CAF_CHECK(is_json(res));
  CAF_CHECK_EQUAL(json_field(res, "/error/code"), "method_not_allowed");
  auto allow = res.header("Allow").value_or("<no Allow header>");
  CAF_CHECK(contains(allow, "GET"));
  CAF_CHECK(!contains(allow, "DELETE"));
}

CAF_TEST(a body over http.max_json_bytes is a 413) {
  std::string body = R"({"pad":")" + std::string(4096 - 10, 'x') + "\"}";
  auto res = request(port, "POST", "/jobs", {{"Content-Type", "application/json"}}, body);
  CAF_CHECK_EQUAL(res.status, 413);
  CAF_CHECK(is_json(res));
  CAF_CHECK_EQUAL(json_field(res, "/error/code"), "payload_too_large");
  // The daemon stays up for everyone else.
  CAF_CHECK_EQUAL(get(port, "/healthz").status, 200);
}

CAF_TEST(a malformed request is a JSON 400) {
  auto raw = raw_exchange(port, "GARBAGE\r\n\r\n", 10s);
  CAF_CHECK_EQUAL(raw.error, "");
  auto responses = parse_responses(raw.data);
  CAF_REQUIRE_EQUAL(responses.size(), 1u);
  auto& res = responses.front();
  CAF_CHECK_EQUAL(res.status, 400);
  CAF_CHECK(is_json(res));
  CAF_CHECK_EQUAL(json_field(res, "/error/code"), "bad_request");
  CAF_CHECK_EQUAL(get(port, "/healthz").status, 200);
}

CAF_TEST(X - Request - ID is echoed or generated) {
  auto echoed = get(port, "/healthz", {{"X-Request-ID", "e2e-req-42"}});
  CAF_CHECK_EQUAL(echoed.header("X-Request-ID").value_or("<none>"), "e2e-req-42");
  auto first = get(port, "/healthz");
  auto second = get(port, "/healthz");
  auto id1 = first.header("X-Request-ID").value_or("");
  auto id2 = second.header("X-Request-ID").value_or("");
  CAF_CHECK(!id1.empty());
  CAF_CHECK(!id2.empty());
  CAF_CHECK_NOT_EQUAL(id1, id2);
  // Errors carry one too.
  auto missing = get(port, "/no/such/route", {{"X-Request-ID", "e2e-404"}});
  CAF_CHECK_EQUAL(missing.header("X-Request-ID").value_or("<none>"), "e2e-404");
}

CAF_TEST(keep - alive serves several requests on one connection) {
  connection conn{port};
  for (auto target : {"/healthz", "/version", "/readyz", "/healthz"}) {
    auto res = conn.request("GET", target);
    CAF_CHECK_EQUAL(res.status, 200);
    CAF_CHECK_EQUAL(res.error, "");
  }
  CAF_CHECK(conn.is_open());
}

CAF_TEST(pipelined requests are answered in order) {
  connection conn{port};
  CAF_REQUIRE(conn.send_raw(raw_get("/version", "pipe-1") + raw_get("/healthz", "pipe-2")));
  auto first = conn.read_response();
  auto second = conn.read_response();
  CAF_CHECK_EQUAL(first.status, 200);
  CAF_CHECK_EQUAL(first.header("X-Request-ID").value_or("<none>"), "pipe-1");
  CAF_CHECK_EQUAL(json_field(first, "/version").empty(), false);
  CAF_CHECK_EQUAL(second.status, 200);
  CAF_CHECK_EQUAL(second.header("X-Request-ID").value_or("<none>"), "pipe-2");
  CAF_CHECK_EQUAL(second.json().dump(), R"({"status":"ok"})");
}

CAF_TEST(events lists node.started with seq and timestamp) {
  // The daemon may log "listening" before node.started is committed.
  CAF_REQUIRE(wait_for_event(port, "node.started").has_value());
  auto res = get(port, "/events");
  CAF_REQUIRE_EQUAL(res.status, 200);
  CAF_CHECK(is_json(res));
  auto body = res.json();
  auto started = events_of_type(body, "node.started");
  CAF_REQUIRE_EQUAL(started.size(), 1u);
  auto& ev = started.front();
  CAF_REQUIRE(ev["seq"].is_number_integer());
  CAF_CHECK_GREATER_OR_EQUAL(ev["seq"].get<int64_t>(), 1);
  CAF_CHECK(is_rfc3339(json_field(ev, "/ts")));
  CAF_CHECK(ev["node"].is_string() && !ev["node"].get<std::string>().empty());
  CAF_CHECK(ev["data"].is_object());
  // since= is exclusive, limit= caps the page.
  auto seq = ev["seq"].get<int64_t>();
  auto before = get(port, "/events?since=" + std::to_string(seq - 1)).json();
  CAF_CHECK_EQUAL(events_of_type(before, "node.started").size(), 1u);
  auto after = get(port, "/events?since=" + std::to_string(seq)).json();
  CAF_REQUIRE(after.contains("events") && after["events"].is_array());
  for (auto& later : after["events"])
    CAF_CHECK_GREATER(later.value("seq", int64_t{0}), seq);
  auto page = get(port, "/events?since=0&limit=1").json();
  CAF_CHECK(page.contains("events") && page["events"].is_array() && page["events"].size() == 1);
}

CAF_TEST_FIXTURE_SCOPE_END()
