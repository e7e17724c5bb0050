#include "http/proxy_headers.hpp"

#include <algorithm>
#include <set>

#include "runtime/ground/text.hpp"

namespace troupe::http {

namespace {

/// The comma-separated tokens of every `Connection` field, lower case.
std::set<std::string> connection_tokens(const header_fields& fields) {
  std::set<std::string> out;
  for (auto& [name, value] : fields) {
    if (!iequals(name, "connection"))
      continue;
    std::string_view rest = value;
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

/// `fields` without hop-by-hop ones and without those Connection names.
header_fields end_to_end(const header_fields& fields) {
  auto named = connection_tokens(fields);
  header_fields out;
  out.reserve(fields.size());
  for (auto& f : fields)
    if (!hop_by_hop(f.first) && named.count(ascii_lower(f.first)) == 0)
      out.push_back(f);
  return out;
}

const std::string* find(const header_fields& fields, std::string_view name) {
  for (auto& [n, v] : fields)
    if (iequals(n, name))
      return &v;
  return nullptr;
}

void erase(header_fields& fields, std::string_view name) {
  fields.erase(
      std::remove_if(fields.begin(), fields.end(), [&](auto& f) { return iequals(f.first, name); }),
      fields.end());
}

} // namespace

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
  return connection_tokens(request).count("upgrade") > 0 && find(request, "upgrade") != nullptr;
}

header_fields upstream_request_fields(const header_fields& request, const forward_context& ctx) {
  auto upgrade = wants_upgrade(request);
  auto out = end_to_end(request);
  // X-Forwarded-For: the client's chain, then this client (all fields
  // folded into one, as one list).
  std::string chain;
  for (auto& [n, v] : request)
    if (iequals(n, "x-forwarded-for") && !trim_ows(v).empty())
      chain += (chain.empty() ? "" : ", ") + std::string{trim_ows(v)};
  erase(out, "x-forwarded-for");
  erase(out, "x-forwarded-proto");
  erase(out, "x-forwarded-host");
  erase(out, "x-request-id");
  if (!ctx.client_ip.empty())
    chain += (chain.empty() ? "" : ", ") + ctx.client_ip;
  if (!chain.empty())
    out.emplace_back("X-Forwarded-For", chain);
  out.emplace_back("X-Forwarded-Proto", ctx.proto);
  if (auto* host = find(request, "host"))
    out.emplace_back("X-Forwarded-Host", *host);
  out.emplace_back("X-Request-ID", ctx.request_id);
  if (ctx.via)
    out.emplace_back("Via", "1.1 troupe");
  if (upgrade) {
    out.emplace_back("Connection", "upgrade");
    out.emplace_back("Upgrade", *find(request, "upgrade"));
  }
  return out;
}

header_fields downstream_response_fields(const header_fields& response, bool upgrade) {
  auto out = end_to_end(response);
  if (upgrade) {
    if (auto* u = find(response, "upgrade")) {
      out.emplace_back("Connection", "upgrade");
      out.emplace_back("Upgrade", *u);
    }
  }
  return out;
}

bool idempotent(std::string_view method) {
  for (auto m : {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
    if (method == m)
      return true;
  return false;
}

} // namespace troupe::http
