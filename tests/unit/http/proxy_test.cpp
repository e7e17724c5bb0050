#define CAF_SUITE proxy
#include "support/dsl.hpp"

// The built-in proxy's pure parts (issue 13): routing, balancing, headers.

#include <map>

#include "http/proxy_balancer.hpp"
#include "http/proxy_headers.hpp"
#include "http/proxy_routes.hpp"
#include "http/request_id.hpp"

using namespace troupe::http;
using namespace std::chrono_literals;

namespace {

expose_rule rule(std::string host, std::string prefix, bool strip = false, uint16_t port = 0) {
  return expose_rule{std::move(host), std::move(prefix), strip, port};
}

std::string app_of(const route_table& t, std::string_view host, std::string_view target,
                   uint16_t port = 0) {
  auto m = t.match(port, host, target);
  return m ? m->app : "<none>";
}

std::string target_of(const route_table& t, std::string_view host, std::string_view target,
                      uint16_t port = 0) {
  auto m = t.match(port, host, target);
  return m ? m->target : "<none>";
}

/// The instance a pick chose ("<none>" if none): a value, so a check does
/// not hold a reference into a temporary.
std::string picked(const std::optional<balancer::endpoint>& e) {
  return e ? e->instance : "<none>";
}

std::string field(const header_fields& fields, std::string_view name) {
  std::string out;
  for (auto& f : fields)
    if (f.name_string() == name)
      out += (out.empty() ? "" : "|") + std::string{f.value()};
  return out.empty() ? "<none>" : out;
}

header_fields upstream(header_fields f, const forward_context& ctx) {
  rewrite_request(f, ctx);
  return f;
}

header_fields downstream(header_fields f, bool upgrade) {
  rewrite_response(f, upgrade);
  return f;
}

} // namespace

CAF_TEST(path prefixes match at segment boundaries and the longest wins) {
  CAF_CHECK(prefix_matches("/api", "/api"));
  CAF_CHECK(prefix_matches("/api", "/api/x"));
  CAF_CHECK(!prefix_matches("/api", "/apix"));
  CAF_CHECK(prefix_matches("/", "/anything"));
  CAF_CHECK_EQUAL(strip_target("/api/x?q=1", "/api"), "/x?q=1");
  CAF_CHECK_EQUAL(strip_target("/api?q=1", "/api"), "/?q=1");
  CAF_CHECK_EQUAL(strip_target("/api", "/api"), "/");
  route_table t;
  t.set("api", rule("", "/api", true));
  t.set("v2", rule("", "/api/v2"));
  t.set("site", rule("", "/"));
  CAF_CHECK_EQUAL(app_of(t, "x", "/api/users"), "api");
  CAF_CHECK_EQUAL(target_of(t, "x", "/api/users"), "/users");
  CAF_CHECK_EQUAL(app_of(t, "x", "/api/v2/users"), "v2");
  CAF_CHECK_EQUAL(target_of(t, "x", "/api/v2/users"), "/api/v2/users"); // not stripped
  CAF_CHECK_EQUAL(app_of(t, "x", "/apiary"), "site");
}

CAF_TEST(hosts match exactly before wildcards and case does not matter) {
  route_table t;
  t.set("exact", rule("api.example.com", ""));
  t.set("wild", rule("*.example.com", ""));
  t.set("deep", rule("*.eu.example.com", ""));
  t.set("any", rule("", "/any"));
  CAF_CHECK_EQUAL(app_of(t, "API.example.com:8080", "/"), "exact");
  CAF_CHECK_EQUAL(app_of(t, "www.example.com", "/"), "wild");
  CAF_CHECK_EQUAL(app_of(t, "x.eu.example.com", "/"), "deep");
  CAF_CHECK_EQUAL(app_of(t, "example.com", "/"), "<none>");
  CAF_CHECK_EQUAL(app_of(t, "other.org", "/any/thing"), "any");
  // A host rule with a prefix needs both.
  t.set("exact", rule("api.example.com", "/v1"));
  CAF_CHECK_EQUAL(app_of(t, "api.example.com", "/v2"), "wild");
  CAF_CHECK_EQUAL(app_of(t, "api.example.com", "/v1/x"), "exact");
}

CAF_TEST(apps without expose are reached at their name with it stripped) {
  route_table t;
  t.set("hello", std::nullopt);
  t.set("exposed", rule("", "/e"));
  CAF_CHECK_EQUAL(app_of(t, "h", "/hello/x?y=1"), "hello");
  CAF_CHECK_EQUAL(target_of(t, "h", "/hello/x?y=1"), "/x?y=1");
  CAF_CHECK_EQUAL(target_of(t, "h", "/hello"), "/");
  CAF_CHECK_EQUAL(app_of(t, "h", "/exposed/x"), "<none>");
  CAF_CHECK_EQUAL(app_of(t, "h", "/nobody"), "<none>");
  t.remove("hello");
  CAF_CHECK_EQUAL(app_of(t, "h", "/hello/x"), "<none>");
}

CAF_TEST(a port of its own takes every request on it and conflicts are refused) {
  route_table t;
  t.set("own", rule("", "", false, 9001));
  t.set("shared", rule("", "/"));
  CAF_CHECK_EQUAL(app_of(t, "x", "/anything", 9001), "own");
  CAF_CHECK_EQUAL(app_of(t, "x", "/anything", 9002), "<none>");
  CAF_CHECK_EQUAL(app_of(t, "x", "/anything"), "shared");
  CAF_CHECK_EQUAL(t.ports(), std::vector<uint16_t>{9001});
  try {
    t.set("thief", rule("", "", false, 9001));
    CAF_FAIL("a second app on port 9001 was accepted");
  } catch (const troupe::spec_error& e) {
    CAF_CHECK_EQUAL(e.field(), "spec.expose.port");
  }
  try {
    t.set("twin", rule("", "/"));
    CAF_FAIL("a second app at the same host and prefix was accepted");
  } catch (const troupe::spec_error& e) {
    CAF_CHECK_EQUAL(e.field(), "spec.expose.pathPrefix");
  }
  // Refused changes leave the table as it was; an app may change its own rule.
  CAF_CHECK_EQUAL(t.size(), 2u);
  t.set("own", rule("", "", false, 9003));
  CAF_CHECK_EQUAL(t.ports(), std::vector<uint16_t>{9003});
}

CAF_TEST(the balancer spreads by least outstanding between two random choices) {
  balancer b;
  b.set_ready({{"a", 1}, {"b", 2}, {"c", 3}});
  std::mt19937_64 rng{42};
  auto now = balancer::clock::now();
  std::map<std::string, int> picks;
  for (int i = 0; i < 3000; ++i) {
    auto e = b.pick(now, rng);
    CAF_REQUIRE(e);
    ++picks[e->instance];
  }
  // No load: random; every instance gets a fair share.
  for (auto& [id, n] : picks)
    CAF_CHECK(n > 700 && n < 1300);
  // Requests in flight on a and b: c (idle) wins whenever it is drawn.
  for (int i = 0; i < 5; ++i) {
    b.started("a");
    b.started("b");
  }
  picks.clear();
  for (int i = 0; i < 3000; ++i)
    ++picks[b.pick(now, rng)->instance];
  // c is one of the two candidates in 2/3 of the draws and wins all of them.
  CAF_CHECK_GREATER(picks["c"], 1800);
  // Excluded (a retry goes elsewhere).
  for (int i = 0; i < 100; ++i)
    CAF_CHECK_NOT_EQUAL(picked(b.pick(now, rng, {"c"})), "c");
}

CAF_TEST(in flight counts outlive the ready set until the last request ends) {
  balancer b;
  b.set_ready({{"a", 1}, {"b", 2}});
  b.started("a");
  b.started("a");
  // a drains: no new requests, its in-flight still counted for the drain.
  b.set_ready({{"b", 2}});
  std::mt19937_64 rng{1};
  auto now = balancer::clock::now();
  for (int i = 0; i < 50; ++i)
    CAF_CHECK_EQUAL(picked(b.pick(now, rng)), "b");
  CAF_CHECK_EQUAL(b.in_flight("a"), 2u);
  b.finished("a");
  CAF_CHECK_EQUAL(b.in_flight("a"), 1u);
  b.finished("a");
  CAF_CHECK_EQUAL(b.in_flight("a"), 0u);
  CAF_CHECK_EQUAL(b.in_flight(), 0u);
  b.set_ready({});
  CAF_CHECK(!b.pick(now, rng));
  CAF_CHECK_EQUAL(b.available(now), 0u);
}

CAF_TEST(consecutive connect failures eject an instance for a while) {
  balancer b{{3, 10'000ms}};
  b.set_ready({{"a", 1}, {"b", 2}});
  auto now = balancer::clock::now();
  CAF_CHECK(!b.connect_failed("a", now));
  b.connect_ok("a"); // a success in between starts over
  CAF_CHECK(!b.connect_failed("a", now));
  CAF_CHECK(!b.connect_failed("a", now));
  CAF_CHECK(b.connect_failed("a", now)); // the third in a row
  CAF_CHECK_EQUAL(b.available(now), 1u);
  std::mt19937_64 rng{7};
  for (int i = 0; i < 50; ++i)
    CAF_CHECK_EQUAL(picked(b.pick(now + 9'999ms, rng)), "b");
  CAF_CHECK_EQUAL(b.available(now + 10'000ms), 2u);
}

CAF_TEST(upstream requests lose hop - by - hop fields and gain forwarding ones) {
  auto in = make_fields({{"Host", "api.example.com"},
                         {"Connection", "keep-alive, X-Secret-Hop"},
                         {"Keep-Alive", "timeout=5"},
                         {"X-Secret-Hop", "1"},
                         {"Transfer-Encoding", "chunked"},
                         {"TE", "trailers"},
                         {"Proxy-Authorization", "Basic eA=="},
                         {"X-Forwarded-For", "10.0.0.1"},
                         {"X-Forwarded-Proto", "gopher"},
                         {"Authorization", "Bearer t"},
                         {"Accept", "*/*"}});
  forward_context ctx{"127.0.0.1", "http", "rid-1", true};
  auto out = upstream(in, ctx);
  for (auto* gone : {"Connection", "Keep-Alive", "X-Secret-Hop", "Transfer-Encoding", "TE",
                     "Proxy-Authorization"})
    CAF_CHECK_EQUAL(field(out, gone), "<none>");
  CAF_CHECK_EQUAL(field(out, "Host"), "api.example.com");
  CAF_CHECK_EQUAL(field(out, "Authorization"), "Bearer t"); // end to end: the app's
  CAF_CHECK_EQUAL(field(out, "Accept"), "*/*");
  CAF_CHECK_EQUAL(field(out, "X-Forwarded-For"), "10.0.0.1, 127.0.0.1");
  CAF_CHECK_EQUAL(field(out, "X-Forwarded-Proto"), "http");
  CAF_CHECK_EQUAL(field(out, "X-Forwarded-Host"), "api.example.com");
  CAF_CHECK_EQUAL(field(out, "X-Request-ID"), "rid-1");
  CAF_CHECK_EQUAL(field(out, "Via"), "1.1 troupe");
}

CAF_TEST(an upgrade keeps connection upgrade both ways) {
  auto in = make_fields({{"Host", "h"},
                         {"Connection", "Upgrade"},
                         {"Upgrade", "websocket"},
                         {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}});
  CAF_CHECK(wants_upgrade(in));
  auto up = upstream(in, {"127.0.0.1", "http", "r", false});
  CAF_CHECK_EQUAL(field(up, "Connection"), "upgrade");
  CAF_CHECK_EQUAL(field(up, "Upgrade"), "websocket");
  CAF_CHECK_EQUAL(field(up, "Sec-WebSocket-Key"), "dGhlIHNhbXBsZSBub25jZQ==");
  CAF_CHECK_EQUAL(field(up, "Via"), "<none>");
  auto res = make_fields({{"Connection", "Upgrade"},
                          {"Upgrade", "websocket"},
                          {"Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}});
  auto down = downstream(res, true);
  CAF_CHECK_EQUAL(field(down, "Connection"), "upgrade");
  CAF_CHECK_EQUAL(field(down, "Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  // Without an upgrade the response loses them.
  auto plain = downstream(
      make_fields({{"Connection", "close"}, {"Content-Type", "text/plain"}, {"Keep-Alive", "x"}}),
      false);
  CAF_CHECK_EQUAL(std::distance(plain.begin(), plain.end()), 1);
  CAF_CHECK(!wants_upgrade(make_fields({{"Upgrade", "websocket"}})));
}

CAF_TEST(request ids and retryable methods) {
  CAF_CHECK_EQUAL(request_id_for("abc-123"), "abc-123");
  CAF_CHECK_EQUAL(request_id_for("has space").size(), 32u);
  CAF_CHECK_EQUAL(request_id_for(std::string(201, 'x')).size(), 32u);
  CAF_CHECK_NOT_EQUAL(request_id_for(""), request_id_for(""));
  CAF_CHECK(idempotent("GET") && idempotent("PUT") && idempotent("DELETE"));
  CAF_CHECK(!idempotent("POST") && !idempotent("PATCH"));
}
