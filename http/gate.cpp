#include "http/gate.hpp"

#include "runtime/ground/text.hpp"
#include <algorithm>
#include <cctype>
#include <cmath>

namespace troupe::http {

namespace {

/// The host part of a Host value: `[::1]:8000` → `[::1]`, `a:1` → `a`.
std::string_view host_part(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  auto colon = host.rfind(':');
  if (colon == std::string_view::npos)
    return host;
  auto port = host.substr(colon + 1);
  if (port.empty() || !std::all_of(port.begin(), port.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      }))
    return host; // not a port: no match will be found either way
  return host.substr(0, colon);
}

bool host_allowed(const gate_options& opts, std::string_view host) {
  if (host.empty())
    return true; // HTTP/1.0 without Host: not a browser
  auto name = host_part(host);
  for (auto known : {"localhost", "127.0.0.1", "[::1]"})
    if (iequals(name, known))
      return true;
  return std::any_of(opts.allowed_hosts.begin(), opts.allowed_hosts.end(),
                     [&](const std::string& h) { return iequals(h, host) || iequals(h, name); });
}

bool is_mutating(std::string_view method) {
  return method != "GET" && method != "HEAD" && method != "OPTIONS";
}

std::string show_bytes(uint64_t n) {
  return std::to_string(n) + " bytes";
}

} // namespace

std::string media_type(std::string_view content_type) {
  auto t = content_type.substr(0, content_type.find(';'));
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t'))
    t.remove_suffix(1);
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t'))
    t.remove_prefix(1);
  return ascii_lower(t);
}

bool is_json_or_yaml(std::string_view media) {
  return media == "application/json" || media == "application/yaml" ||
         media == "application/x-yaml" || media == "text/yaml" || media == "text/x-yaml";
}

std::optional<std::string> take_access_token(request& req) {
  auto i = req.query.find("access_token");
  if (i == req.query.end())
    return std::nullopt;
  auto token = std::move(i->second);
  req.query.erase(i);
  // Redact every occurrence in the raw target (it is what gets logged). Keys are
  // compared decoded, as parse_target read them: `access%5Ftoken=` is the same key.
  auto q = req.target.find('?');
  while (q != std::string::npos && q < req.target.size()) {
    auto start = q + 1;
    auto end = req.target.find('&', start);
    auto item = std::string_view{req.target}.substr(
        start, end == std::string::npos ? std::string::npos : end - start);
    auto eq = item.find('=');
    if (eq != std::string_view::npos && url_decode(item.substr(0, eq), true) == "access_token") {
      req.target.replace(start + eq + 1, item.size() - eq - 1, "REDACTED");
      end = req.target.find('&', start);
    }
    q = end;
  }
  return token;
}

std::optional<response> check_origin(const gate_options& opts, const request& req,
                                     std::vector<std::pair<std::string, std::string>>& cors) {
  auto& host = req.header("host");
  if (opts.loopback && !host_allowed(opts, host))
    return response::error(403, "forbidden_host",
                           "Host " + host +
                               " is not served on this loopback listener (add it to "
                               "http.allowed_hosts)",
                           "Host");
  auto& origin = req.header("origin");
  if (origin.empty())
    return std::nullopt;
  auto own = std::string{opts.tls ? "https://" : "http://"} + host;
  if (!host.empty() && iequals(origin, own))
    return std::nullopt;
  auto allowed = std::any_of(opts.allowed_origins.begin(), opts.allowed_origins.end(),
                             [&](const std::string& o) { return iequals(o, origin); });
  if (!allowed)
    return response::error(403, "forbidden_origin",
                           "requests from origin " + origin +
                               " are refused (add it to http.allowed_origins)",
                           "Origin");
  cors.emplace_back("Access-Control-Allow-Origin", origin);
  cors.emplace_back("Vary", "Origin");
  cors.emplace_back("Access-Control-Expose-Headers",
                    "X-Request-ID, Location, Retry-After, X-Next-After, X-More");
  if (req.method == "OPTIONS" && !req.header("access-control-request-method").empty()) {
    response res;
    res.status = 204;
    res.content_type = "text/plain";
    res.headers = cors;
    res.headers.emplace_back("Access-Control-Allow-Methods", "GET, HEAD, POST, DELETE");
    res.headers.emplace_back("Access-Control-Allow-Headers",
                             "Authorization, Content-Type, Last-Event-ID, X-Request-ID");
    res.headers.emplace_back("Access-Control-Max-Age", "600");
    return res;
  }
  return std::nullopt;
}

verdict admit(const gate_options& opts, request& req, const route_options& route,
              const std::optional<std::string>& token, std::optional<uint64_t> content_length,
              bool has_body) {
  verdict v;
  // Who is calling.
  if (!opts.auth) {
    req.granted = role::admin;
  } else if (route.needs != role::none || !req.header("authorization").empty()) {
    auto presented = bearer_token(req.header("authorization"));
    if (presented.empty() && route.query_token && token)
      presented = *token;
    auto table = opts.auth->current();
    auto who = table && !presented.empty() ? table->find(presented) : std::nullopt;
    if (!who && route.needs != role::none) {
      auto res = response::error(401, "unauthorized",
                                 presented.empty()
                                     ? "this route needs a token: Authorization: Bearer <token>"
                                     : "the token is not valid",
                                 "Authorization");
      res.headers.emplace_back("WWW-Authenticate", presented.empty() ? "Bearer realm=\"troupe\""
                                                                     : "Bearer realm=\"troupe\", "
                                                                       "error=\"invalid_token\"");
      v.answer = std::move(res);
      return v;
    }
    if (who) {
      req.principal = who->name;
      req.granted = who->granted;
    }
  }
  if (!allows(req.granted, route.needs)) {
    v.answer =
        response::error(403, "forbidden",
                        "this route needs the " + std::string{to_string(route.needs)} +
                            " role; token " + req.principal + " has " + to_string(req.granted),
                        "Authorization");
    return v;
  }
  // What it sends.
  if (has_body) {
    auto media = media_type(req.header("content-type"));
    if (route.body == body_kind::none) {
      v.answer = response::error(413, "payload_too_large",
                                 req.method + " " + req.path + " takes no request body");
      return v;
    }
    bool multipart = media == "multipart/form-data";
    if (!is_json_or_yaml(media) && !(multipart && route.body == body_kind::upload)) {
      auto accepted = route.body == body_kind::upload
                          ? "application/json, application/yaml or multipart/form-data"
                          : "application/json or application/yaml";
      v.answer = response::error(415, "unsupported_media_type",
                                 "Content-Type " + (media.empty() ? std::string{"(none)"} : media) +
                                     " is not accepted here; send " + accepted,
                                 "Content-Type");
      return v;
    }
    v.body.to_file = multipart;
    v.body.limit = multipart ? opts.max_upload_bytes : opts.max_json_bytes;
    if (content_length && *content_length > v.body.limit) {
      auto key = multipart ? "jobs.max_archive_bytes" : "http.max_json_bytes";
      v.answer = response::error(413, "payload_too_large",
                                 "request body of " + show_bytes(*content_length) +
                                     " exceeds the limit of " + show_bytes(v.body.limit) + " (" +
                                     key + ")");
      return v;
    }
  }
  // How often.
  if (opts.limiter && is_mutating(req.method)) {
    auto now = rate_limiter::clock::now();
    auto wait = opts.limiter->acquire("a:" + req.peer, now);
    if (!wait && !req.principal.empty())
      wait = opts.limiter->acquire("t:" + req.principal, now);
    if (wait) {
      auto res = response::error(429, "too_many_requests",
                                 "rate limit of mutating requests exceeded; retry later");
      res.headers.emplace_back("Retry-After", std::to_string(static_cast<long>(std::ceil(*wait))));
      v.answer = std::move(res);
      return v;
    }
  }
  return v;
}

} // namespace troupe::http
