#include "http/proxy_routes.hpp"

#include <algorithm>

#include "runtime/ground/text.hpp"

namespace troupe::http {

namespace {

/// The host of a Host header: lower case, without a ":port" (IPv6 literals
/// in brackets keep their colons).
std::string host_only(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    return ascii_lower(host.substr(0, close == std::string_view::npos ? host.size() : close + 1));
  }
  auto colon = host.rfind(':');
  return ascii_lower(colon == std::string_view::npos ? host : host.substr(0, colon));
}

/// How well `rule_host` matches `host`: 0 no match; exact names beat
/// wildcards, longer wildcard suffixes beat shorter ones, and any host (an
/// empty rule) comes last.
size_t host_score(const std::string& rule_host, const std::string& host) {
  if (rule_host.empty())
    return 1;
  if (rule_host.size() > 2 && rule_host[0] == '*' && rule_host[1] == '.') {
    auto suffix = std::string_view{rule_host}.substr(1); // ".example.com"
    if (host.size() > suffix.size() && ascii_lower(std::string_view{host}.substr(
                                           host.size() - suffix.size())) == ascii_lower(suffix))
      return 2 + suffix.size();
    return 0;
  }
  return iequals(rule_host, host) ? 100000 : 0;
}

std::string_view path_of(std::string_view target) {
  return target.substr(0, target.find('?'));
}

} // namespace

bool prefix_matches(std::string_view prefix, std::string_view path) {
  if (prefix.empty() || prefix == "/")
    return true;
  if (path.size() < prefix.size() || path.compare(0, prefix.size(), prefix) != 0)
    return false;
  return path.size() == prefix.size() || path[prefix.size()] == '/';
}

std::string strip_target(std::string_view target, std::string_view prefix) {
  if (prefix.empty() || prefix == "/")
    return std::string{target};
  auto rest = target.substr(std::min(prefix.size(), target.size()));
  if (rest.empty() || rest.front() != '/')
    return "/" + std::string{rest};
  return std::string{rest};
}

void route_table::set(const std::string& app, const std::optional<expose_rule>& rule) {
  if (rule) {
    for (auto& [other, r] : rules_) {
      if (other == app || !r)
        continue;
      if (rule->port != 0 && r->port == rule->port)
        throw spec_error("spec.expose.port", "port " + std::to_string(rule->port) +
                                                 " is already the listener of app " + other);
      if (rule->port == 0 && r->port == 0 && iequals(r->host, rule->host) &&
          r->path_prefix == rule->path_prefix)
        throw spec_error("spec.expose.pathPrefix",
                         "app " + other + " is already exposed at host '" + rule->host +
                             "' and path prefix '" + rule->path_prefix + "'");
    }
  }
  rules_[app] = rule;
}

void route_table::remove(const std::string& app) {
  rules_.erase(app);
}

std::optional<route_match> route_table::match(uint16_t listener_port, std::string_view host,
                                              std::string_view target) const {
  auto path = path_of(target);
  if (listener_port != 0) {
    for (auto& [app, r] : rules_)
      if (r && r->port == listener_port)
        return route_match{app, r->strip_prefix && prefix_matches(r->path_prefix, path)
                                    ? strip_target(target, r->path_prefix)
                                    : std::string{target}};
    return std::nullopt;
  }
  auto h = host_only(host);
  const std::string* best_app = nullptr;
  const expose_rule* best = nullptr;
  size_t best_host = 0;
  size_t best_prefix = 0;
  for (auto& [app, r] : rules_) {
    if (!r || r->port != 0)
      continue;
    auto hs = host_score(r->host, h);
    if (hs == 0 || !prefix_matches(r->path_prefix, path))
      continue;
    // The most specific host, then the longest prefix; on a tie the first
    // app by name (a stable choice).
    if (!best || hs > best_host || (hs == best_host && r->path_prefix.size() > best_prefix)) {
      best_app = &app;
      best = &*r;
      best_host = hs;
      best_prefix = r->path_prefix.size();
    }
  }
  if (best)
    return route_match{*best_app, best->strip_prefix ? strip_target(target, best->path_prefix)
                                                     : std::string{target}};
  // Apps without expose: /{app}/… with the prefix stripped.
  if (path.size() > 1 && path.front() == '/') {
    auto slash = path.find('/', 1);
    auto name =
        path.substr(1, slash == std::string_view::npos ? std::string_view::npos : slash - 1);
    auto i = rules_.find(std::string{name});
    if (i != rules_.end() && !i->second)
      return route_match{i->first, strip_target(target, target.substr(0, 1 + name.size()))};
  }
  return std::nullopt;
}

std::vector<uint16_t> route_table::ports() const {
  std::vector<uint16_t> out;
  for (auto& [app, r] : rules_)
    if (r && r->port != 0)
      out.push_back(r->port);
  std::sort(out.begin(), out.end());
  return out;
}

} // namespace troupe::http
