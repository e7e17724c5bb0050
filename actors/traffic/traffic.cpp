#include "actors/traffic/traffic.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
#include "actors/metrics/metrics.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

using self_ptr = traffic_actor::stateful_pointer<traffic_state>;

std::shared_ptr<spdlog::logger> log() {
  return logging::get("proxy");
}

void sample(self_ptr self) {
  auto& st = self->state;
  metric_deltas out;
  std::set<std::string> now;
  for (auto& app : st.proxy->apps()) {
    auto v = st.proxy->app_view(app);
    if (!v)
      continue;
    now.insert(app);
    out.push_back(
        gauge_delta("apps.connections.active", {app}, static_cast<double>(v->active_connections)));
  }
  for (auto& gone : st.reported)
    if (now.count(gone) == 0)
      out.push_back(gauge_delta("apps.connections.active", {gone}, 0));
  st.reported = std::move(now);
  if (!out.empty())
    report_metrics(self->system(), std::move(out));
}

} // namespace

std::optional<expose_rule> rule_of(const app_endpoints& x) {
  if (!x.exposed)
    return std::nullopt;
  expose_rule r;
  r.host = x.host;
  r.path_prefix = x.path_prefix;
  r.strip_prefix = x.strip_prefix;
  r.port = x.port;
  return r;
}

traffic_actor::behavior_type traffic(traffic_actor::stateful_pointer<traffic_state> self,
                                     std::shared_ptr<http::proxy_server> proxy,
                                     std::chrono::milliseconds sample_interval) {
  self->state.proxy = std::move(proxy);
  self->state.sample_interval = sample_interval;
  if (sample_interval.count() > 0)
    self->delayed_send(self, sample_interval, tick_atom::value);
  return {
      [self](app_endpoints& x) {
        auto& st = self->state;
        if (x.deleted) {
          st.proxy->remove_app(x.app);
          return;
        }
        std::vector<http::balancer::endpoint> ready;
        ready.reserve(x.ready.size());
        for (auto& e : x.ready)
          ready.push_back({e.instance, e.port});
        std::optional<http::activation_options> activation;
        if (x.activation_timeout_ms > 0) {
          activation.emplace();
          activation->timeout = std::chrono::milliseconds(x.activation_timeout_ms);
          activation->max_pending = x.activation_max_pending;
        }
        try {
          st.proxy->set_app(x.app, rule_of(x), ready, activation);
        } catch (const std::exception& e) {
          // Registration refuses conflicting rules; what is left is a port
          // another process holds. The app keeps its previous route.
          ++st.refused;
          log()->error("proxy: app {} not routed as its spec.expose asks: {}", x.app, e.what());
          publish_traffic_event(self, "proxy.route_refused",
                                {{"app", x.app}, {"reason", e.what()}});
        }
      },
      [self](in_flight_atom, const std::string& app, const std::string& instance) {
        return self->state.proxy->in_flight(app, instance);
      },
      [self](get_atom, const std::string& app) {
        app_traffic out;
        out.app = app;
        if (auto v = self->state.proxy->app_view(app)) {
          out.active_connections = v->active_connections;
          out.last_request_ns = v->last_request_ns;
          out.pending = v->pending;
          for (auto& l : v->instances) {
            out.in_flight += l.in_flight;
            out.instances.push_back({l.instance, l.port, l.in_flight});
            if (l.ejected)
              out.ejected.push_back(l.instance);
          }
        }
        return out;
      },
      [self](ejected_atom, const std::string& app, const std::string& instance) {
        publish_traffic_event(
            self, "instance.ejected",
            {{"app", app},
             {"instance", instance},
             {"reason", "consecutive connect failures at the proxy: no requests for "
                        "proxy.eject_seconds, readiness probed now"}});
        if (auto apps = lookup(self->system(), names::apps))
          self->send(*apps, ejected_atom::value, app, instance);
      },
      [self](activate_atom, const std::string& app) {
        if (auto apps = lookup(self->system(), names::apps))
          self->send(*apps, activate_atom::value, app);
      },
      [self](tick_atom) {
        sample(self);
        self->delayed_send(self, self->state.sample_interval, tick_atom::value);
      },
      [self](status_atom) {
        auto& st = self->state;
        component_status s;
        s.name = traffic_state::name;
        s.healthy = true;
        caf::put(s.fields, "port", static_cast<uint64_t>(st.proxy->port()));
        caf::put(s.fields, "apps", static_cast<uint64_t>(st.proxy->apps().size()));
        caf::put(s.fields, "connections", static_cast<uint64_t>(st.proxy->connections()));
        caf::put(s.fields, "refused_updates", st.refused);
        return s;
      },
  };
}

} // namespace troupe
