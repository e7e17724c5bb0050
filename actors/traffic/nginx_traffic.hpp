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
// the instance succeeded and the workers that ran before it have exited
// (nginx's graceful reload lets old workers finish what they hold).
// Metrics: each second it reads what nginx appended to troupe's JSON access
// log (the same apps.requests and apps.request.duration series the built-in
// proxy records) and polls stub_status (proxy.nginx.connections).
// Detached: it runs nginx and waits for it.

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "actors/interfaces.hpp"
#include "actors/metrics/metrics_model.hpp"
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
  std::chrono::steady_clock::time_point last_reload{};
  /// The app whose change asked for the rendering in progress.
  std::string last_changed;
  uint64_t reloads = 0;
  uint64_t rejected = 0;
  std::string last_error;
  /// Ticks sent and not yet received (their due times).
  std::multiset<std::chrono::steady_clock::time_point> pending_ticks;
  std::chrono::steady_clock::time_point last_poll{};
  /// Instances a reload took out, per app, and nginx's workers from before
  /// that reload: the instance may still serve until they have exited.
  std::map<std::string, std::map<std::string, std::vector<int>>> leaving;
  /// The access log: path, open file, how far it was read, a partial line.
  std::string access_log;
  int log_fd = -1;
  uint64_t log_inode = 0;
  uint64_t log_offset = 0;
  /// The log existed when this actor started (read from its end then).
  bool log_at_start = false;
  std::string log_partial;
  uint64_t log_lines = 0;
  std::map<std::string, int64_t> last_request_ns;
  /// Requests nginx answered 503 in the last poll for an app with no ready
  /// instance: the app is woken (nginx cannot hold them; the built-in proxy
  /// does), and the autoscaler sees them as pending.
  std::map<std::string, uint64_t> refused_at_zero;
  std::shared_ptr<metrics::recorder> recorder;
  /// The last stub_status answer (or why there is none).
  nginx::stub_status stub;
  std::string stub_error;

  ~nginx_traffic_state();
};

/// `conf_dir`: proxy.nginx.conf_dir or DATA_DIR/nginx (it must exist).
/// Request metrics go through `recorder` (the one the registry drains).
traffic_actor::behavior_type
nginx_traffic(traffic_actor::stateful_pointer<nginx_traffic_state> self, proxy_config cfg,
              std::string conf_dir, std::shared_ptr<metrics::recorder> recorder);

} // namespace troupe
