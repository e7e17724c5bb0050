#pragma once

// Header rewriting of the built-in proxy (issue 13), both ways: hop-by-hop
// fields removed (RFC 9110 7.6.1: Connection, the fields it names,
// Keep-Alive, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, TE,
// Trailer, Transfer-Encoding, Upgrade — the proxy frames each side itself),
// except that an upgrade (WebSocket) keeps `Connection: upgrade` and
// `Upgrade`; X-Forwarded-For (appended), X-Forwarded-Proto, X-Forwarded-Host
// and X-Request-ID set on the way up, Via optionally.

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include <boost/beast/http/fields.hpp>

namespace troupe::http {

/// A message's header fields (Beast's container: rewritten in place, so a
/// proxied request costs no copy of its fields).
using header_fields = boost::beast::http::fields;

/// Fields from name/value pairs, in order.
header_fields make_fields(std::initializer_list<std::pair<std::string_view, std::string_view>> xs);

/// What the proxy knows about the client side of a request.
struct forward_context {
  /// The client's address (what X-Forwarded-For gets appended).
  std::string client_ip;
  /// "http" or "https": how the client reached the proxy.
  std::string proto = "http";
  /// The request's id (request_id_for the client's X-Request-ID).
  std::string request_id;
  /// Adds `Via: 1.1 troupe`.
  bool via = false;
};

/// Whether `name` is a hop-by-hop field (case-insensitive), not counting
/// the ones a Connection header names.
bool hop_by_hop(std::string_view name);

/// True if the request asks for a protocol upgrade (`Connection: upgrade`
/// among its tokens and an `Upgrade` field).
bool wants_upgrade(const header_fields& request);

/// Rewrites a request's fields as the upstream gets them. `Host` stays the
/// client's (X-Forwarded-Host says it too).
void rewrite_request(header_fields& request, const forward_context& ctx);

/// Rewrites a response's fields as the client gets them (`upgrade`: a 101
/// that switches protocols keeps Connection and Upgrade).
void rewrite_response(header_fields& response, bool upgrade);

/// Methods a failed attempt may be retried with on another instance.
bool idempotent(std::string_view method);

} // namespace troupe::http
