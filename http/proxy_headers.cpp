#include "http/proxy_headers.hpp"

#include <algorithm>
#include <set>

#include "runtime/ground/text.hpp"

namespace troupe::http {

namespace {

/// The comma-separated tokens of every `Connection` field, lower case.
std::set<std::string> connection_tokens(const header_fields& fields) {
  std::set<std::string> out;
  for (auto& f : fields) {
    if (f.name() != boost::beast::http::field::connection)
      continue;
    std::string_view rest = f.value();
    while (!rest.empty()) {
      auto comma = rest.find(',');
      auto token = trim_ows(rest.substr(0, comma));
      if (!token.empty())
        out.insert(ascii_lower(token));
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    }
  }
  return out;
}

/// Removes hop-by-hop fields, those the Connection fields name, and any
/// named in `also`.
void keep_end_to_end(header_fields& fields, std::initializer_list<std::string_view> also = {}) {
  auto named = connection_tokens(fields);
  for (auto i = fields.begin(); i != fields.end();) {
    auto name = i->name_string();
    bool drop = hop_by_hop(name) || (!named.empty() && named.count(ascii_lower(name)) > 0);
    for (auto a : also)
      drop = drop || iequals(a, name);
    i = drop ? fields.erase(i) : std::next(i);
  }
}

} // namespace

header_fields make_fields(std::initializer_list<std::pair<std::string_view, std::string_view>> xs) {
  header_fields out;
  for (auto& [n, v] : xs)
    out.insert(n, v);
  return out;
}

bool hop_by_hop(std::string_view name) {
  static constexpr std::string_view names[] = {"connection",
                                               "keep-alive",
                                               "proxy-connection",
                                               "proxy-authenticate",
                                               "proxy-authorization",
                                               "te",
                                               "trailer",
                                               "transfer-encoding",
                                               "upgrade"};
  for (auto n : names)
    if (iequals(n, name))
      return true;
  return false;
}

bool wants_upgrade(const header_fields& request) {
  return request.find(boost::beast::http::field::upgrade) != request.end() &&
         connection_tokens(request).count("upgrade") > 0;
}

void rewrite_request(header_fields& f, const forward_context& ctx) {
  using boost::beast::http::field;
  bool upgrade = wants_upgrade(f);
  std::string upgrade_to = upgrade ? std::string{f[field::upgrade]} : std::string{};
  // X-Forwarded-For: the client's chain, then this client (all fields
  // folded into one, as one list).
  std::string chain;
  for (auto& x : f)
    if (iequals(x.name_string(), "x-forwarded-for") && !trim_ows(x.value()).empty())
      chain += (chain.empty() ? "" : ", ") + std::string{trim_ows(x.value())};
  std::string host{f[field::host]};
  keep_end_to_end(f, {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"});
  if (!ctx.client_ip.empty())
    chain += (chain.empty() ? "" : ", ") + ctx.client_ip;
  if (!chain.empty())
    f.insert("X-Forwarded-For", chain);
  f.insert("X-Forwarded-Proto", ctx.proto);
  if (!host.empty())
    f.insert("X-Forwarded-Host", host);
  f.insert("X-Request-ID", ctx.request_id);
  if (ctx.via)
    f.insert(field::via, "1.1 troupe");
  if (upgrade) {
    f.insert(field::connection, "upgrade");
    f.insert(field::upgrade, upgrade_to);
  }
}

void rewrite_response(header_fields& f, bool upgrade) {
  using boost::beast::http::field;
  std::string upgrade_to;
  if (upgrade && f.find(field::upgrade) != f.end())
    upgrade_to = std::string{f[field::upgrade]};
  keep_end_to_end(f);
  if (!upgrade_to.empty()) {
    f.insert(field::connection, "upgrade");
    f.insert(field::upgrade, upgrade_to);
  }
}

bool idempotent(std::string_view method) {
  for (auto m : {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
    if (method == m)
      return true;
  return false;
}

} // namespace troupe::http
