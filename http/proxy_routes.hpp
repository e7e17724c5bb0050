#pragma once

// The built-in proxy's routing table (issue 13): which app a request is for.
// Pure data, read on the proxy's io threads. An app is reached by its
// `spec.expose`: a Host (exact, or `*.suffix`), a path prefix (the longest
// that matches at a segment boundary wins, stripped or not), a listener port
// of its own — or, without `expose`, at `/{app}/…` on the shared listener
// with that prefix stripped.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/ground/expose.hpp"
#include "runtime/ground/spec_document.hpp"

namespace troupe::http {

/// How an app is exposed (runtime/ground/expose.hpp).
using troupe::expose_rule;

/// Where a request goes: the app, and the target to send upstream.
struct route_match {
  std::string app;
  std::string target;
};

class route_table {
public:
  /// Adds or replaces `app`'s rule (nullopt: no expose, reached at /{app}/…).
  /// Throws spec_error naming `spec.expose.port` or
  /// `spec.expose.pathPrefix` when another app already holds the same
  /// port, or the same host and prefix; the table is unchanged then.
  void set(const std::string& app, const std::optional<expose_rule>& rule);

  void remove(const std::string& app);

  /// The app a request is for: on listener `listener_port` (0: the shared
  /// listener), with Host header `host` (a ":port" suffix is ignored) and
  /// request target `target` (path and query). nullopt: no app.
  std::optional<route_match> match(uint16_t listener_port, std::string_view host,
                                   std::string_view target) const;

  /// The ports of apps with a listener of their own.
  std::vector<uint16_t> ports() const;

  size_t size() const { return rules_.size(); }

private:
  std::map<std::string, std::optional<expose_rule>> rules_;
};

/// Whether `prefix` matches `path` at a segment boundary ("/api" matches
/// "/api", "/api/", "/api/x", not "/apix"; "/" matches everything).
bool prefix_matches(std::string_view prefix, std::string_view path);

/// `target` with `prefix` removed from its path; "/" when nothing is left
/// ("/api?q=1" with "/api" → "/?q=1").
std::string strip_target(std::string_view target, std::string_view prefix);

} // namespace troupe::http
