#include "actors/autoscale/autoscaler.hpp"

#include <algorithm>
#include <memory>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/core/names.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

using self_ptr = autoscaler_actor::stateful_pointer<autoscaler_state>;
using observation_ptr = std::shared_ptr<autoscale::observation>;

constexpr auto ask_timeout = std::chrono::seconds(5);

std::shared_ptr<spdlog::logger> log() {
  return logging::get("autoscale");
}

void next_tick(self_ptr self) {
  self->delayed_send(self, self->state.interval, tick_atom::value);
}

/// Decides on a complete observation and sends what is worth recording.
void decide(self_ptr self, const observation_ptr& o) {
  auto& st = self->state;
  ++st.evaluations;
  auto d = st.engine->evaluate(*o);
  next_tick(self);
  if (!d)
    return;
  st.last_rule = d->rule;
  st.last_reason = d->reason;
  if (d->changed())
    log()->info("app {}: {} -> {} replicas ({}: {})", st.app, d->from, d->to, d->rule, d->reason);
  auto apps = lookup(self->system(), names::apps);
  if (!apps)
    return;
  autoscale_record r{st.app,      d->ts_ns, d->metric, d->window, d->observed, d->target,
                     d->proposal, d->from,  d->to,     d->rule,   d->reason};
  self->request(*apps, ask_timeout, scale_atom::value, std::move(r))
      .then([](ok_atom) {},
            [self](caf::error& err) {
              log()->warn("app {}: decision not applied: {}", self->state.app, caf::to_string(err));
            });
}

/// The request counter and the latency window, from the registry.
void read_requests(self_ptr self, const observation_ptr& o) {
  auto registry = lookup(self->system(), names::metrics);
  if (!registry) {
    decide(self, o);
    return;
  }
  self->request(*registry, ask_timeout, get_atom::value)
      .then(
          [self, o](metric_snapshots& series) {
            auto& st = self->state;
            double total = 0;
            for (auto& s : series) {
              if (s.labels.empty() || s.labels[0] != st.app)
                continue;
              if (s.family == "apps.requests")
                total += s.value;
              else if (s.family == "apps.request.duration")
                for (auto& w : s.windows)
                  if (w.window == "1m" && w.count > 0)
                    o->p95_ms = w.p95 * 1000.0;
            }
            // The rate since the last evaluation; the first has none (a
            // missing sample: it may scale out on others, never in).
            if (st.last_total >= 0 && o->at_ns > st.last_at_ns)
              o->rps = std::max(0.0, total - st.last_total) /
                       (static_cast<double>(o->at_ns - st.last_at_ns) / 1e9);
            st.last_total = total;
            st.last_at_ns = o->at_ns;
            decide(self, o);
          },
          [self, o](caf::error&) { decide(self, o); });
}

/// Connections and the last request, from the traffic actor (without a
/// proxy there is no request rate either).
void read_traffic(self_ptr self, const observation_ptr& o) {
  auto traffic = lookup(self->system(), names::traffic);
  if (!traffic) {
    decide(self, o);
    return;
  }
  self->request(*traffic, ask_timeout, get_atom::value, self->state.app)
      .then(
          [self, o](app_traffic& t) {
            o->connections = static_cast<double>(t.active_connections);
            o->last_request_ns = t.last_request_ns;
            read_requests(self, o);
          },
          [self, o](caf::error&) { decide(self, o); });
}

void evaluate(self_ptr self) {
  auto apps = lookup(self->system(), names::apps);
  if (!apps) {
    next_tick(self);
    return;
  }
  auto o = std::make_shared<autoscale::observation>();
  o->at_ns = now_ns();
  auto app = self->state.app;
  self->request(*apps, ask_timeout, get_atom::value, app)
      .then(
          [self, o, apps = *apps, app](app_status& s) {
            if (s.state != "up") {
              next_tick(self);
              return;
            }
            o->current = s.desired;
            o->ready = s.ready;
            self->request(apps, ask_timeout, usage_atom::value, app)
                .then(
                    [self, o](app_usage& u) {
                      if (!u.instances.empty()) {
                        o->cpu_percent = u.cpu_percent;
                        o->rss_bytes = static_cast<double>(u.rss_bytes);
                      }
                      read_traffic(self, o);
                    },
                    [self, o](caf::error&) { read_traffic(self, o); });
          },
          [self](caf::error&) { next_tick(self); });
}

} // namespace

autoscaler_actor::behavior_type
autoscaler(autoscaler_actor::stateful_pointer<autoscaler_state> self, std::string app,
           app_scaling_policy policy, autoscale::bounds limits) {
  auto& st = self->state;
  st.app = std::move(app);
  st.interval = std::chrono::seconds(std::max(1, policy.evaluation_seconds));
  st.engine.emplace(std::move(policy), limits, now_ns());
  next_tick(self);
  return {
      [self](tick_atom) { evaluate(self); },
      [self](status_atom) {
        auto& st = self->state;
        component_status s;
        s.name = autoscaler_state::name;
        s.healthy = true;
        caf::put(s.fields, "app", st.app);
        caf::put(s.fields, "evaluations", st.evaluations);
        caf::put(s.fields, "last_rule", st.last_rule);
        caf::put(s.fields, "last_reason", st.last_reason);
        return s;
      },
  };
}

} // namespace troupe
