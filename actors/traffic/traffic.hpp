#pragma once

// The traffic wing's actor (issue 13): the built-in proxy's side in the
// actor system. App actors tell it their ready endpoints and expose rule on
// every change (a subscription, not polling); it hands them to the data
// plane (http/proxy), answers drains with in-flight counts, passes the data
// plane's ejections on to the apps (readiness is probed at once), and samples
// the per-app connection gauges. The data plane itself lives on its own io
// threads and outlives a restart of this actor, so nothing is lost then.

#include <chrono>
#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
#include "actors/interfaces.hpp"
#include "http/proxy.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

struct traffic_state {
  static inline const char* name = "traffic";
  std::shared_ptr<http::proxy_server> proxy;
  std::chrono::milliseconds sample_interval{1'000};
  /// Apps whose gauges were reported (a deleted one's go to 0 once).
  std::set<std::string> reported;
  /// Updates the data plane refused (a port it cannot listen on).
  uint64_t refused = 0;
};

/// `sample_interval` 0: no gauge ticks (deterministic tests).
traffic_actor::behavior_type traffic(traffic_actor::stateful_pointer<traffic_state> self,
                                     std::shared_ptr<http::proxy_server> proxy,
                                     std::chrono::milliseconds sample_interval);

/// The expose rule an app_endpoints message carries (nullopt: none).
std::optional<expose_rule> rule_of(const app_endpoints& x);

/// Publishes a proxy event on the node's event bus without waiting (lost,
/// with a warning, if the bus is away).
template <class Self>
void publish_traffic_event(Self self, const std::string& type, const nlohmann::json& data) {
  auto bus = lookup(self->system(), names::event_bus);
  if (!bus)
    return;
  self->request(*bus, std::chrono::seconds(30), publish_atom::value, make_event(type, data.dump()))
      .then([](uint64_t) {},
            [type](caf::error& err) {
              logging::get("proxy")->warn("{} not published: {}", type, caf::to_string(err));
            });
}

} // namespace troupe
