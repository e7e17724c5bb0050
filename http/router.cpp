#include "http/router.hpp"

#include <algorithm>

#include "runtime/ground/logging.hpp"

namespace troupe::http {

namespace {

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < path.size()) {
    if (path[pos] == '/') {
      ++pos;
      continue;
    }
    auto end = path.find('/', pos);
    if (end == std::string_view::npos)
      end = path.size();
    out.push_back(path.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

bool is_param(std::string_view seg) {
  return seg.size() > 2 && seg.front() == '{' && seg.back() == '}';
}

} // namespace

const std::string& request::header(const std::string& name) const {
  static const std::string empty;
  auto i = headers.find(name);
  return i == headers.end() ? empty : i->second;
}

std::optional<std::string> request::param(const std::string& name) const {
  auto i = query.find(name);
  if (i == query.end())
    return std::nullopt;
  return i->second;
}

response response::json(unsigned status, std::string body) {
  response res;
  res.status = status;
  res.body = std::move(body);
  return res;
}

response response::error(unsigned status, std::string_view code, std::string_view message,
                         std::string_view field) {
  std::string body = "{\"error\":{\"code\":\"";
  logging::append_json_escaped(body, code);
  body += "\",\"message\":\"";
  logging::append_json_escaped(body, message);
  body += '"';
  if (!field.empty()) {
    body += ",\"field\":\"";
    logging::append_json_escaped(body, field);
    body += '"';
  }
  body += "}}";
  return json(status, std::move(body));
}

void router::add(std::string method, std::string pattern, route_options opts, handler h) {
  route r;
  r.method = std::move(method);
  r.opts = opts;
  for (auto seg : split_path(pattern))
    r.segments.emplace_back(seg);
  r.pattern = std::move(pattern);
  r.fn = std::move(h);
  routes_.push_back(std::move(r));
}

router::match_result router::match(std::string_view method, std::string_view path) const {
  match_result result;
  auto segs = split_path(path);
  std::vector<std::string> allowed;
  for (auto& r : routes_) {
    if (r.segments.size() != segs.size())
      continue;
    std::map<std::string, std::string> params;
    bool ok = true;
    for (size_t i = 0; i < segs.size() && ok; ++i) {
      auto& pat = r.segments[i];
      if (is_param(pat))
        params.emplace(pat.substr(1, pat.size() - 2), url_decode(segs[i]));
      else
        ok = pat == segs[i];
    }
    if (!ok)
      continue;
    if (r.method == method || (method == "HEAD" && r.method == "GET")) {
      result.fn = &r.fn;
      result.opts = r.opts;
      result.params = std::move(params);
      result.route = r.pattern;
      return result;
    }
    allowed.push_back(r.method);
    if (r.method == "GET")
      allowed.push_back("HEAD");
  }
  std::sort(allowed.begin(), allowed.end());
  allowed.erase(std::unique(allowed.begin(), allowed.end()), allowed.end());
  for (auto& m : allowed) {
    if (!result.allow.empty())
      result.allow += ", ";
    result.allow += m;
  }
  return result;
}

void parse_target(std::string_view target, std::string& path,
                  std::map<std::string, std::string>& query) {
  auto q = target.find('?');
  path = url_decode(target.substr(0, q));
  if (q == std::string_view::npos)
    return;
  auto rest = target.substr(q + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    auto pair = rest.substr(0, amp);
    if (!pair.empty()) {
      auto eq = pair.find('=');
      auto key = url_decode(pair.substr(0, eq), true);
      auto value =
          eq == std::string_view::npos ? std::string{} : url_decode(pair.substr(eq + 1), true);
      query.emplace(std::move(key), std::move(value));
    }
    if (amp == std::string_view::npos)
      break;
    rest = rest.substr(amp + 1);
  }
}

} // namespace troupe::http
