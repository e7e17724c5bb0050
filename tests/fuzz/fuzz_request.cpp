// Raw bytes on a connection → Beast's request parser as http/server.cpp sets
// it up (header and body limits, several pipelined requests) → what the
// session does with each request: parse_target, header folding, router::match
// over troupe's real route patterns, and the JSON error body of a 404/405.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "fuzz_check.hpp"
#include "http/router.hpp"
#include "runtime/ground/config.hpp"

namespace beast = boost::beast;
namespace bhttp = beast::http;
using namespace troupe;

namespace {

// http/server.cpp's header_limit and runtime.cpp's body limit (the larger of
// the JSON and archive limits).
constexpr size_t header_limit = 16 * 1024;
const uint64_t body_limit = std::max(http_config{}.max_json_bytes, jobs_config{}.max_archive_bytes);
constexpr int max_pipelined = 8;

struct route_pattern {
  const char* method;
  const char* pattern;
};

constexpr route_pattern route_table[] = {
#include "fuzz_routes.inc"
};

std::vector<std::string> segments(std::string_view path) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < path.size()) {
    auto end = std::min(path.find('/', pos), path.size());
    if (end > pos)
      out.emplace_back(path.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

const http::router& routes() {
  static const http::router r = [] {
    http::router r;
    for (auto& rt : route_table)
      r.add(rt.method, rt.pattern, {}, [](const http::exchange_ptr&) {});
    return r;
  }();
  return r;
}

void check_decode(std::string_view raw) {
  auto plain = troupe::url_decode(raw);
  auto form = troupe::url_decode(raw, true);
  FUZZ_CHECK(plain.size() <= raw.size(), raw);
  FUZZ_CHECK(form.size() == plain.size(), raw);
  if (raw.find('%') == std::string_view::npos)
    FUZZ_CHECK(plain == raw, raw);
}

void check_json(const std::string& body) {
  FUZZ_CHECK(nlohmann::json::accept(body), body);
}

// What a matched route must satisfy: same number of segments, literal
// segments equal, a parameter per {name}, method equal (or HEAD on GET).
void check_match(const std::string& method, const std::string& path) {
  auto m = routes().match(method, path);
  auto segs = segments(path);
  if (!m.fn) {
    FUZZ_CHECK(m.route.empty(), m.route);
    if (!m.allow.empty())
      check_json(
          http::response::error(405, "method_not_allowed", method + " is not allowed on " + path)
              .body);
    else
      check_json(http::response::error(404, "not_found", "no route for " + path).body);
    return;
  }
  FUZZ_CHECK(m.allow.empty(), m.allow);
  auto it = std::find_if(std::begin(route_table), std::end(route_table),
                         [&](const route_pattern& r) { return r.pattern == m.route; });
  FUZZ_CHECK(it != std::end(route_table), m.route);
  auto pat = segments(m.route);
  FUZZ_CHECK(pat.size() == segs.size(), path + " matched " + m.route);
  size_t names = 0;
  for (size_t i = 0; i < pat.size(); ++i) {
    if (pat[i].size() > 2 && pat[i].front() == '{' && pat[i].back() == '}') {
      ++names;
      auto p = m.params.find(pat[i].substr(1, pat[i].size() - 2));
      FUZZ_CHECK(p != m.params.end(), path + " matched " + m.route);
    } else {
      FUZZ_CHECK(pat[i] == segs[i], path + " matched " + m.route);
    }
  }
  FUZZ_CHECK(m.params.size() == names, path + " matched " + m.route);
  bool method_ok = std::any_of(std::begin(route_table), std::end(route_table), [&](auto& r) {
    return r.pattern == m.route &&
           (r.method == method || (method == "HEAD" && r.method == std::string{"GET"}));
  });
  FUZZ_CHECK(method_ok, method + " " + path + " matched " + m.route);
}

// The session's work on one parsed request.
void handle(const bhttp::request<bhttp::string_body>& raw) {
  http::request req;
  req.method = std::string{raw.method_string()};
  req.target = std::string{raw.target()};
  check_decode(req.target);
  http::parse_target(req.target, req.path, req.query);
  FUZZ_CHECK(req.path.size() <= req.target.size(), req.target);
  for (auto& field : raw) {
    std::string name{field.name_string()};
    for (auto& c : name)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto [it, inserted] = req.headers.emplace(std::move(name), std::string{field.value()});
    if (!inserted) {
      it->second += ", ";
      it->second += field.value();
    }
  }
  check_match(req.method, req.path);
}

// Feeds `in` to fresh parsers as a keep-alive connection would; returns the
// bytes consumed by complete requests.
void parse_connection(std::string_view in) {
  for (int n = 0; n < max_pipelined && !in.empty(); ++n) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.body_limit(body_limit);
    parser.header_limit(header_limit);
    parser.eager(true);
    beast::error_code ec;
    while (!in.empty() && !parser.is_done()) {
      auto used = parser.put(boost::asio::buffer(in.data(), in.size()), ec);
      in.remove_prefix(used);
      if (ec == bhttp::error::need_more && used > 0) {
        ec = {};
        continue;
      }
      if (ec)
        break;
    }
    if (!parser.is_done() && (!ec || ec == bhttp::error::need_more)) {
      ec = {};
      parser.put_eof(ec); // the client closed its side
    }
    if (ec || !parser.is_done())
      return; // the server answers 400/413/431 and closes
    handle(parser.get());
    if (!parser.get().keep_alive())
      return;
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  parse_connection(fuzz::as_text(data, size));
  return 0;
}
