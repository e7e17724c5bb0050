#define CAF_SUITE router
#include "support/dsl.hpp"

#include <nlohmann/json.hpp>

#include "http/router.hpp"

using namespace troupe::http;

namespace {

struct fixture {
  router r;
  std::string hit;

  fixture() {
    r.add("GET", "/healthz", {role::read}, [this](const exchange_ptr&) { hit = "healthz"; });
    r.add("GET", "/jobs/{id}", {role::read}, [this](const exchange_ptr&) { hit = "get job"; });
    r.add("DELETE", "/jobs/{id}", {role::read},
          [this](const exchange_ptr&) { hit = "delete job"; });
    r.add("GET", "/jobs/{id}/stream", {role::read},
          [this](const exchange_ptr&) { hit = "stream"; });
  }

  std::string call(std::string_view method, std::string_view path) {
    auto m = r.match(method, path);
    if (!m.fn)
      return m.allow.empty() ? "404" : "405 " + m.allow;
    (*m.fn)(nullptr);
    return hit;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(router_tests, fixture)

CAF_TEST(routes match by method and path with parameters) {
  CAF_CHECK_EQUAL(call("GET", "/healthz"), "healthz");
  CAF_CHECK_EQUAL(call("GET", "/jobs/42"), "get job");
  CAF_CHECK_EQUAL(call("DELETE", "/jobs/42"), "delete job");
  CAF_CHECK_EQUAL(call("GET", "/jobs/42/stream"), "stream");
  auto m = r.match("GET", "/jobs/a%20b/stream");
  CAF_REQUIRE(m.fn != nullptr);
  CAF_CHECK_EQUAL(m.params.at("id"), "a b");
  CAF_CHECK_EQUAL(m.route, "/jobs/{id}/stream");
}

CAF_TEST(head is answered by get routes) {
  CAF_CHECK_EQUAL(call("HEAD", "/healthz"), "healthz");
}

CAF_TEST(unknown paths are 404 and wrong methods 405 with allow) {
  CAF_CHECK_EQUAL(call("GET", "/nope"), "404");
  CAF_CHECK_EQUAL(call("GET", "/jobs"), "404");
  CAF_CHECK_EQUAL(call("GET", "/jobs/1/stream/x"), "404");
  CAF_CHECK_EQUAL(call("POST", "/healthz"), "405 GET, HEAD");
  CAF_CHECK_EQUAL(call("PUT", "/jobs/7"), "405 DELETE, GET, HEAD");
}

CAF_TEST(targets split into decoded path and query) {
  std::string path;
  std::map<std::string, std::string> query;
  parse_target("/logs%2Fx?service=a+b&level=error&empty=&flag", path, query);
  CAF_CHECK_EQUAL(path, "/logs/x");
  CAF_CHECK_EQUAL(query.at("service"), "a b");
  CAF_CHECK_EQUAL(query.at("level"), "error");
  CAF_CHECK_EQUAL(query.at("empty"), "");
  CAF_CHECK_EQUAL(query.at("flag"), "");
  CAF_CHECK_EQUAL(url_decode("%zz%4"), "%zz%4");
  CAF_CHECK_EQUAL(url_decode("100%25"), "100%");
}

CAF_TEST(error responses are json with code and message) {
  auto res = response::error(400, "invalid_field", "bad \"x\"", "spec.x");
  CAF_CHECK_EQUAL(res.status, 400u);
  CAF_CHECK_EQUAL(res.body,
                  R"({"error":{"code":"invalid_field","message":"bad \"x\"","field":"spec.x"}})");
}

// Found by fuzz_request: a 404 for a path with bytes that are not UTF-8
// (`GET /%ff`) quoted them as they were, and the body was not JSON.
CAF_TEST(error responses stay json when the message holds invalid utf8) {
  auto res =
      response::error(404, "not_found", "no route for /\xff\xc3\x28 \xe2\x98\x83", "\xed\xa0\x80");
  auto doc = nlohmann::json::parse(res.body, nullptr, false);
  CAF_REQUIRE(!doc.is_discarded());
  CAF_CHECK_EQUAL(doc["error"]["message"].get<std::string>(),
                  "no route for /\xef\xbf\xbd\xef\xbf\xbd( \xe2\x98\x83");
  CAF_CHECK_EQUAL(doc["error"]["field"].get<std::string>(), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

CAF_TEST_FIXTURE_SCOPE_END()
