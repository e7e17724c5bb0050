#pragma once

// nginx mode's rendering (issue 13): troupe.conf from the apps' ready
// instances and expose rules, through the template in configs/
// (configs/nginx-app.conf.in). Pure: the nginx actor writes, validates and
// reloads what this returns.

#include <cstdint>
#include <optional>
#include <string>
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

/// The line that splits the template into its upstream and location parts.
inline constexpr const char* location_marker = "# -- location --";

/// troupe.conf: each app's upstream (when it has a ready instance), then one
/// server block per listener and host with each app's location in it (an
/// app with none ready answers 503 no_ready_instance there). `listen` is
/// proxy.listen (HOST:PORT). Throws spec_error naming
/// `proxy.nginx.template` if the template lacks the marker line.
std::string render(const std::string& tmpl, const std::string& listen,
                   const std::vector<app_part>& apps);

} // namespace troupe::nginx
