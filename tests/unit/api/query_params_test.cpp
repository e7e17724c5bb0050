#define CAF_SUITE query_params
#include "support/dsl.hpp"

#include <nlohmann/json.hpp>

#include "http/api/query_params.hpp"

using namespace troupe;

namespace {

http::request make_request(std::map<std::string, std::string> query,
                           std::map<std::string, std::string> headers = {}) {
  http::request req;
  req.query = std::move(query);
  req.headers = std::move(headers);
  return req;
}

/// The error's JSON, or null when every parameter was good.
nlohmann::json error_of(const query_params& p) {
  if (!p.error())
    return nullptr;
  CAF_CHECK_EQUAL(p.error()->status, 400u);
  return nlohmann::json::parse(p.error()->body)["error"];
}

} // namespace

CAF_TEST(an absent parameter reads as its fallback) {
  auto req = make_request({});
  query_params p{req};
  CAF_CHECK_EQUAL(p.uint("limit", 100, 1, 1000), 100u);
  CAF_CHECK(!p.time("since"));
  CAF_CHECK_EQUAL(p.flag("from_beginning", true), true);
  CAF_CHECK(!p.last_event_id("last_event_id"));
  CAF_CHECK(error_of(p).is_null());
}

CAF_TEST(good values are read) {
  auto req = make_request({{"limit", "1000"},
                           {"after", "18446744073709551615"},
                           {"since", "1700000000"},
                           {"from_beginning", "0"}},
                          {{"last-event-id", "42"}});
  query_params p{req};
  CAF_CHECK_EQUAL(p.uint("limit", 100, 1, 1000), 1000u);
  CAF_CHECK_EQUAL(p.uint("after", 0, 0, UINT64_MAX), UINT64_MAX);
  CAF_CHECK_EQUAL(p.time("since").value_or(0), 1'700'000'000'000'000'000);
  CAF_CHECK_EQUAL(p.flag("from_beginning", true), false);
  CAF_CHECK_EQUAL(p.last_event_id().value_or(0), 42u);
  CAF_CHECK(error_of(p).is_null());
}

CAF_TEST(a bad integer is a 400 naming it) {
  for (auto raw : {"abc", "0", "1001", "-1", "5x", ""}) {
    auto req = make_request({{"limit", raw}});
    query_params p{req};
    CAF_CHECK_EQUAL(p.uint("limit", 100, 1, 1000), 100u);
    auto err = error_of(p);
    CAF_REQUIRE(!err.is_null());
    CAF_CHECK_EQUAL(err["code"], "invalid_parameter");
    CAF_CHECK_EQUAL(err["field"], "limit");
    CAF_CHECK_EQUAL(err["message"], "limit must be an integer between 1 and 1000, got \"" +
                                        std::string{raw} + "\"");
  }
}

CAF_TEST(a bad time is a 400 naming it) {
  auto req = make_request({{"since", "yesterday"}});
  query_params p{req};
  CAF_CHECK(!p.time("since"));
  auto err = error_of(p);
  CAF_REQUIRE(!err.is_null());
  CAF_CHECK_EQUAL(err["field"], "since");
  CAF_CHECK_EQUAL(err["message"],
                  "since must be an RFC 3339 time or Unix seconds, got \"yesterday\"");
}

CAF_TEST(a flag is true false 1 or 0) {
  auto req = make_request({{"a", "true"}, {"b", "1"}, {"c", "false"}, {"d", "yes"}});
  query_params p{req};
  CAF_CHECK_EQUAL(p.flag("a", false), true);
  CAF_CHECK_EQUAL(p.flag("b", false), true);
  CAF_CHECK_EQUAL(p.flag("c", true), false);
  CAF_CHECK(error_of(p).is_null());
  CAF_CHECK_EQUAL(p.flag("d", true), true);
  auto err = error_of(p);
  CAF_CHECK_EQUAL(err["field"], "d");
}

CAF_TEST(Last - Event - ID comes from the header before the query) {
  auto both = make_request({{"last_event_id", "7"}}, {{"last-event-id", "9"}});
  query_params p{both};
  CAF_CHECK_EQUAL(p.last_event_id("last_event_id").value_or(0), 9u);
  auto query_only = make_request({{"last_event_id", "7"}});
  query_params q{query_only};
  CAF_CHECK_EQUAL(q.last_event_id("last_event_id").value_or(0), 7u);
  // A route that takes no query fallback ignores it.
  query_params r{query_only};
  CAF_CHECK(!r.last_event_id());
}

CAF_TEST(a bad Last - Event - ID names where it came from) {
  auto header = make_request({}, {{"last-event-id", "x1"}});
  query_params p{header};
  CAF_CHECK(!p.last_event_id("last_event_id"));
  auto err = error_of(p);
  CAF_CHECK_EQUAL(err["field"], "Last-Event-ID");
  CAF_CHECK_EQUAL(err["message"], "Last-Event-ID must be a sequence number (the id of the "
                                  "last event received), got \"x1\"");
  auto query = make_request({{"last_event_id", "-3"}});
  query_params q{query};
  CAF_CHECK(!q.last_event_id("last_event_id"));
  auto query_err = error_of(q);
  CAF_CHECK_EQUAL(query_err["field"], "last_event_id");
}

CAF_TEST(the first bad parameter is the one named) {
  auto req = make_request({{"since", "soon"}, {"limit", "many"}});
  query_params p{req};
  p.time("since");
  p.uint("limit", 1, 1, 10);
  auto err = error_of(p);
  CAF_CHECK_EQUAL(err["field"], "since");
}

CAF_TEST(one of a list of choices) {
  auto req = make_request({{"status", "running"}, {"kind", "fast"}});
  query_params p{req};
  CAF_CHECK_EQUAL(p.one_of("status", {"queued", "running"}).value_or(""), "running");
  CAF_CHECK(!p.one_of("absent", {"a"}));
  CAF_CHECK(error_of(p).is_null());
  CAF_CHECK(!p.one_of("kind", {"slow", "steady"}));
  auto err = error_of(p);
  CAF_CHECK_EQUAL(err["message"], "kind must be one of slow, steady, got \"fast\"");
}

CAF_TEST(key value pairs are comma separated) {
  auto req = make_request({{"label", "team:core,env:"}, {"bad", "a:1,:2"}, {"worse", "a:1,"}});
  query_params p{req};
  auto pairs = p.key_values("label");
  CAF_REQUIRE_EQUAL(pairs.size(), 2u);
  CAF_CHECK_EQUAL(pairs[0].first, "team");
  CAF_CHECK_EQUAL(pairs[0].second, "core");
  CAF_CHECK_EQUAL(pairs[1].first, "env");
  CAF_CHECK_EQUAL(pairs[1].second, "");
  CAF_CHECK(error_of(p).is_null());
  CAF_CHECK(p.key_values("bad").empty());
  auto bad = error_of(p);
  CAF_CHECK_EQUAL(bad["field"], "bad");
  query_params q{req};
  CAF_CHECK(q.key_values("worse").empty());
  auto worse = error_of(q);
  CAF_CHECK_EQUAL(worse["field"], "worse");
}
