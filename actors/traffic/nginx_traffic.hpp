#pragma once

// nginx mode's actor (issue 13, proxy.mode: nginx): the same traffic
// interface as the built-in proxy's, but the data plane is the operator's
// nginx. On a change of any app's ready instances it renders troupe.conf
// (actors/traffic/nginx_config) into proxy.nginx.conf_dir, validates the
// whole configuration with `nginx -t -c proxy.nginx.main_conf`, and reloads
// (proxy.nginx.reload_command); a rendering nginx refuses is taken back (the
// previous configuration stays live) and published as proxy.config_rejected
// with nginx's message. Changes coalesce: at most one reload per
// proxy.nginx.min_reload_interval. A drain waits until a reload without
// the instance succeeded (nginx's graceful reload lets old workers finish
// what they hold). Detached: it runs nginx and waits for it.

#include <chrono>
#include <map>
#include <set>
#include <string>

#include "actors/interfaces.hpp"
#include "actors/traffic/nginx_config.hpp"
#include "runtime/ground/config.hpp"

namespace troupe {

struct nginx_traffic_state {
  static inline const char* name = "nginx_traffic";
  proxy_config cfg;
  std::string conf_dir;
  std::map<std::string, nginx::app_part> apps;
  /// Instances in the configuration nginx runs now, per app.
  std::map<std::string, std::set<std::string>> live;
  /// What troupe.conf holds now (the last accepted rendering).
  std::string current;
  bool dirty = false;
  bool scheduled = false;
  std::chrono::steady_clock::time_point last_reload{};
  /// The app whose change asked for the rendering in progress.
  std::string last_changed;
  uint64_t reloads = 0;
  uint64_t rejected = 0;
  std::string last_error;
};

/// `conf_dir`: proxy.nginx.conf_dir or DATA_DIR/nginx (it must exist).
traffic_actor::behavior_type
nginx_traffic(traffic_actor::stateful_pointer<nginx_traffic_state> self, proxy_config cfg,
              std::string conf_dir);

} // namespace troupe
