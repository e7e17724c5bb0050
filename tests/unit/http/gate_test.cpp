#define CAF_SUITE gate
#include "support/dsl.hpp"

#include "http/gate.hpp"

using namespace troupe::http;

namespace {

const std::string admin_token = "admin-token-0123456789";
const std::string submit_token = "submit-token-0123456789";
const std::string read_token = "read-token-0123456789ab";

struct fixture {
  gate_options opts;

  fixture() {
    opts.auth = std::make_shared<authenticator>(std::make_shared<token_table>(
        std::vector<token_entry>{{"ops", admin_token, role::admin, ""},
                                 {"ci", submit_token, role::submit, ""},
                                 {"dash", read_token, role::read, ""}}));
    opts.max_json_bytes = 1000;
    opts.max_upload_bytes = 100'000;
  }

  static request make(std::string method, std::string target,
                      std::map<std::string, std::string> headers = {}) {
    request req;
    req.method = std::move(method);
    req.target = std::move(target);
    parse_target(req.target, req.path, req.query);
    req.headers = std::move(headers);
    req.peer = "127.0.0.1";
    return req;
  }

  verdict run(request& req, route_options route, std::optional<uint64_t> length = std::nullopt,
              bool has_body = false) {
    auto token = take_access_token(req);
    return admit(opts, req, route, token, length, has_body);
  }

  static std::string code(const std::optional<response>& res) {
    if (!res)
      return "admitted";
    auto body = res->body;
    auto at = body.find("\"code\":\"");
    if (at == std::string::npos)
      return std::to_string(res->status);
    at += 8;
    return std::to_string(res->status) + " " + body.substr(at, body.find('"', at) - at);
  }

  static std::string header(const response& res, const std::string& name) {
    for (auto& [k, v] : res.headers)
      if (k == name)
        return v;
    return "<none>";
  }
};

std::map<std::string, std::string> bearer(const std::string& token) {
  return {{"authorization", "Bearer " + token}};
}

} // namespace

CAF_TEST_FIXTURE_SCOPE(gate_tests, fixture)

CAF_TEST(a route needing a role refuses a request without a token with 401) {
  auto req = make("GET", "/jobs");
  auto v = run(req, {role::read});
  CAF_CHECK_EQUAL(code(v.answer), "401 unauthorized");
  CAF_REQUIRE(v.answer);
  CAF_CHECK_EQUAL(header(*v.answer, "WWW-Authenticate"), "Bearer realm=\"troupe\"");
}

CAF_TEST(an unknown token is a 401 naming an invalid token) {
  auto req = make("GET", "/jobs", bearer("not-a-known-token-123"));
  auto v = run(req, {role::read});
  CAF_CHECK_EQUAL(code(v.answer), "401 unauthorized");
  CAF_REQUIRE(v.answer);
  CAF_CHECK(header(*v.answer, "WWW-Authenticate").find("invalid_token") != std::string::npos);
}

CAF_TEST(roles are ordered admin over submit over read) {
  for (auto& [token, needs, expected] : std::vector<std::tuple<std::string, role, std::string>>{
           {read_token, role::read, "admitted"},
           {read_token, role::submit, "403 forbidden"},
           {read_token, role::admin, "403 forbidden"},
           {submit_token, role::read, "admitted"},
           {submit_token, role::submit, "admitted"},
           {submit_token, role::admin, "403 forbidden"},
           {admin_token, role::submit, "admitted"},
           {admin_token, role::admin, "admitted"},
       }) {
    auto req = make("GET", "/x", bearer(token));
    CAF_CHECK_EQUAL(code(run(req, {needs}).answer), expected);
  }
}

CAF_TEST(an admitted request carries the token name and role) {
  auto req = make("GET", "/jobs", bearer(submit_token));
  CAF_CHECK_EQUAL(code(run(req, {role::read}).answer), "admitted");
  CAF_CHECK_EQUAL(req.principal, "ci");
  CAF_CHECK(req.granted == role::submit);
}

CAF_TEST(public routes need no token and ignore a wrong one) {
  auto req = make("GET", "/healthz");
  CAF_CHECK_EQUAL(code(run(req, {role::none}).answer), "admitted");
  auto wrong = make("GET", "/healthz", bearer("wrong-token-but-public"));
  CAF_CHECK_EQUAL(code(run(wrong, {role::none}).answer), "admitted");
}

CAF_TEST(auth mode none makes every caller admin) {
  opts.auth = nullptr;
  auto req = make("DELETE", "/jobs/x");
  CAF_CHECK_EQUAL(code(run(req, {role::admin}).answer), "admitted");
  CAF_CHECK(req.granted == role::admin);
}

CAF_TEST(access_token is accepted only on streaming routes and always redacted) {
  auto req = make("GET", "/events?access_token=" + read_token + "&limit=5");
  CAF_CHECK_EQUAL(code(run(req, {role::read, body_kind::none, true}).answer), "admitted");
  CAF_CHECK_EQUAL(req.target, "/events?access_token=REDACTED&limit=5");
  CAF_CHECK_EQUAL(req.query.count("access_token"), 0u);
  CAF_CHECK_EQUAL(req.query.at("limit"), "5");
  auto other = make("GET", "/jobs?access_token=" + read_token);
  CAF_CHECK_EQUAL(code(run(other, {role::read}).answer), "401 unauthorized");
  CAF_CHECK_EQUAL(other.target, "/jobs?access_token=REDACTED");
  // The key as parse_target decodes it: percent-encoded, form-encoded, repeated.
  auto encoded =
      make("GET", "/events?access%5Ftoken=" + read_token + "&x=1&access_token=" + read_token);
  CAF_CHECK_EQUAL(code(run(encoded, {role::read, body_kind::none, true}).answer), "admitted");
  CAF_CHECK_EQUAL(encoded.target, "/events?access%5Ftoken=REDACTED&x=1&access_token=REDACTED");
  CAF_CHECK_EQUAL(encoded.target.find(read_token), std::string::npos);
}

CAF_TEST(bodies are refused by media type and declared size before they are read) {
  auto body_on_get = make("GET", "/healthz");
  CAF_CHECK_EQUAL(code(run(body_on_get, {role::none}, 10, true).answer), "413 payload_too_large");
  auto form = make("POST", "/jobs",
                   {{"content-type", "application/x-www-form-urlencoded"},
                    {"authorization", "Bearer " + admin_token}});
  CAF_CHECK_EQUAL(code(run(form, {role::submit, body_kind::upload}, 20, true).answer),
                  "415 unsupported_media_type");
  auto none = make("POST", "/jobs", bearer(admin_token));
  CAF_CHECK_EQUAL(code(run(none, {role::submit, body_kind::upload}, 20, true).answer),
                  "415 unsupported_media_type");
  auto text = make("POST", "/x",
                   {{"content-type", "text/plain"}, {"authorization", "Bearer " + admin_token}});
  CAF_CHECK_EQUAL(code(run(text, {role::submit, body_kind::json}, 20, true).answer),
                  "415 unsupported_media_type");
  auto multipart_on_json = make("POST", "/x",
                                {{"content-type", "multipart/form-data; boundary=x"},
                                 {"authorization", "Bearer " + admin_token}});
  CAF_CHECK_EQUAL(code(run(multipart_on_json, {role::submit, body_kind::json}, 20, true).answer),
                  "415 unsupported_media_type");
  auto big = make("POST", "/jobs",
                  {{"content-type", "application/json; charset=utf-8"},
                   {"authorization", "Bearer " + admin_token}});
  CAF_CHECK_EQUAL(code(run(big, {role::submit, body_kind::upload}, 1001, true).answer),
                  "413 payload_too_large");
}

CAF_TEST(admitted bodies get the route s limit and uploads go to a file) {
  auto json =
      make("POST", "/jobs",
           {{"content-type", "application/yaml"}, {"authorization", "Bearer " + admin_token}});
  auto v = run(json, {role::submit, body_kind::upload}, 1000, true);
  CAF_CHECK_EQUAL(code(v.answer), "admitted");
  CAF_CHECK_EQUAL(v.body.to_file, false);
  CAF_CHECK_EQUAL(v.body.limit, 1000u);
  auto upload = make("POST", "/jobs",
                     {{"content-type", "multipart/form-data; boundary=abc"},
                      {"authorization", "Bearer " + admin_token}});
  auto u = run(upload, {role::submit, body_kind::upload}, std::nullopt, true);
  CAF_CHECK_EQUAL(code(u.answer), "admitted");
  CAF_CHECK_EQUAL(u.body.to_file, true);
  CAF_CHECK_EQUAL(u.body.limit, 100'000u);
}

CAF_TEST(a loopback listener serves only loopback host names) {
  for (auto& [host, expected] : std::vector<std::pair<std::string, bool>>{
           {"localhost:8000", true},
           {"127.0.0.1:8000", true},
           {"[::1]:8000", true},
           {"LOCALHOST", true},
           {"", true},
           {"evil.example:8000", false},
           {"127.0.0.1.evil.example", false},
           {"troupe.internal:8000", true},
       }) {
    opts.allowed_hosts = {"troupe.internal"};
    std::vector<std::pair<std::string, std::string>> cors;
    auto req = make("GET", "/healthz", {{"host", host}});
    auto res = check_origin(opts, req, cors);
    CAF_CHECK_EQUAL(code(res), expected ? "admitted" : "403 forbidden_host");
  }
  opts.loopback = false;
  std::vector<std::pair<std::string, std::string>> cors;
  auto req = make("GET", "/healthz", {{"host", "troupe.example.com"}});
  CAF_CHECK_EQUAL(code(check_origin(opts, req, cors)), "admitted");
}

CAF_TEST(foreign origins are refused and allowed ones get CORS headers) {
  std::vector<std::pair<std::string, std::string>> cors;
  auto own =
      make("POST", "/jobs", {{"host", "127.0.0.1:8000"}, {"origin", "http://127.0.0.1:8000"}});
  CAF_CHECK_EQUAL(code(check_origin(opts, own, cors)), "admitted");
  CAF_CHECK(cors.empty());
  auto evil =
      make("POST", "/jobs", {{"host", "127.0.0.1:8000"}, {"origin", "https://evil.example"}});
  CAF_CHECK_EQUAL(code(check_origin(opts, evil, cors)), "403 forbidden_origin");
  auto null_origin = make("POST", "/jobs", {{"host", "127.0.0.1:8000"}, {"origin", "null"}});
  CAF_CHECK_EQUAL(code(check_origin(opts, null_origin, cors)), "403 forbidden_origin");
  CAF_CHECK(cors.empty());
  opts.allowed_origins = {"https://dash.example"};
  auto dash =
      make("GET", "/jobs", {{"host", "127.0.0.1:8000"}, {"origin", "https://dash.example"}});
  CAF_CHECK_EQUAL(code(check_origin(opts, dash, cors)), "admitted");
  CAF_REQUIRE_EQUAL(cors.size(), 3u);
  CAF_CHECK_EQUAL(cors[0].second, "https://dash.example");
  cors.clear();
  auto preflight = make("OPTIONS", "/jobs",
                        {{"host", "127.0.0.1:8000"},
                         {"origin", "https://dash.example"},
                         {"access-control-request-method", "POST"}});
  auto res = check_origin(opts, preflight, cors);
  CAF_REQUIRE(res);
  CAF_CHECK_EQUAL(res->status, 204u);
  CAF_CHECK(header(*res, "Access-Control-Allow-Headers").find("Authorization") !=
            std::string::npos);
}

CAF_TEST(mutating requests are rate limited per address with Retry - After) {
  opts.limiter = std::make_shared<rate_limiter>(0.5, 2);
  auto post = [&] {
    auto req =
        make("POST", "/jobs",
             {{"content-type", "application/json"}, {"authorization", "Bearer " + submit_token}});
    return run(req, {role::submit, body_kind::upload}, 2, true);
  };
  CAF_CHECK_EQUAL(code(post().answer), "admitted");
  CAF_CHECK_EQUAL(code(post().answer), "admitted");
  auto third = post();
  CAF_CHECK_EQUAL(code(third.answer), "429 too_many_requests");
  CAF_REQUIRE(third.answer);
  CAF_CHECK_EQUAL(header(*third.answer, "Retry-After"), "2");
  // Reads are not limited.
  auto get = make("GET", "/jobs", bearer(submit_token));
  CAF_CHECK_EQUAL(code(run(get, {role::read}).answer), "admitted");
}

CAF_TEST(token buckets refill at the rate and the table stays bounded) {
  using namespace std::chrono_literals;
  rate_limiter lim{2, 3, 4};
  auto t0 = rate_limiter::clock::time_point{} + 1h;
  for (int i = 0; i < 3; ++i)
    CAF_CHECK(!lim.acquire("a", t0));
  auto wait = lim.acquire("a", t0);
  CAF_REQUIRE(wait);
  CAF_CHECK_EQUAL(*wait, 0.5);
  CAF_CHECK(!lim.acquire("a", t0 + 500ms));
  CAF_CHECK(lim.acquire("a", t0 + 500ms));
  for (int i = 0; i < 100; ++i)
    lim.acquire("k" + std::to_string(i), t0);
  CAF_CHECK_EQUAL(lim.size(), 4u);
}

CAF_TEST_FIXTURE_SCOPE_END()
