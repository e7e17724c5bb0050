#pragma once

// nginx mode's rendering (issue 13): troupe.conf from the apps' ready
// instances and expose rules, through the template in configs/
// (configs/nginx-app.conf.in). Pure: the nginx actor writes, validates and
// reloads what this returns.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/ground/expose.hpp"

namespace troupe::nginx {

/// One app as nginx mode renders it.
struct app_part {
  std::string name;
  std::optional<expose_rule> expose;
  /// Ready instances: id and port.
  std::vector<std::pair<std::string, uint16_t>> ready;
};

/// What troupe adds around the template's parts, for its metrics.
struct render_options {
  /// proxy.listen (HOST:PORT): the shared listener.
  std::string listen;
  /// The JSON access log troupe tails (format troupe_json: app, status,
  /// seconds, upstream, msec per line); empty: none.
  std::string access_log;
  /// HOST:PORT of a server with `location = /stub_status`; empty: none.
  std::string status_listen;
};

/// The line that splits the template into its upstream and location parts.
inline constexpr const char* location_marker = "# -- location --";

/// troupe.conf: each app's upstream (when it has a ready instance), then one
/// server block per listener and host with each app's location in it (an
/// app with none ready answers 503 no_ready_instance there); every request
/// of an app's location is logged to `opts.access_log` with the app's name
/// (troupe's own lines, not the template's: a template edit cannot blind
/// the metrics). Throws spec_error naming `proxy.nginx.template` if the
/// template lacks the marker line.
std::string render(const std::string& tmpl, const render_options& opts,
                   const std::vector<app_part>& apps);

/// One line of the access log render() configures.
struct access_entry {
  std::string app;
  int status = 0;
  double seconds = 0;
  /// Unix time of the request's end, in nanoseconds.
  int64_t at_ns = 0;
};

/// Parses one access log line; nullopt for a line that is not one of
/// troupe's (or of no app).
std::optional<access_entry> parse_access_line(std::string_view line);

/// nginx's stub_status page.
struct stub_status {
  uint64_t active = 0, accepts = 0, handled = 0, requests = 0;
  uint64_t reading = 0, writing = 0, waiting = 0;
};

/// Parses a stub_status body; nullopt if it is not one.
std::optional<stub_status> parse_stub_status(std::string_view body);

} // namespace troupe::nginx
