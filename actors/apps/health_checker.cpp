#include "actors/apps/health_checker.hpp"

#include "runtime/ground/clock.hpp"

namespace troupe::apps {

namespace {

using self_ptr = health_checker_actor::stateful_pointer<health_checker_state>;

/// Starts probe number seq + 1 and schedules the one after it, so probes
/// start every interval (Kubernetes' period) whatever each one takes; the
/// start-up interval until the first healthy result, if one is set. An
/// extra probe (`scheduled` false) leaves the schedule as it is.
void start_probe(self_ptr self, bool scheduled = true) {
  auto& st = self->state;
  auto seq = ++st.seq;
  st.in_flight = true;
  // Weak: a probe in flight must not keep a stopped checker alive.
  auto weak = caf::actor_cast<caf::weak_actor_ptr>(self);
  st.probes->probe(st.cfg.request, [weak, seq](probe_outcome out) {
    auto strong = weak.lock();
    if (!strong)
      return;
    probe_result r;
    r.seq = seq;
    r.healthy = out.verdict == probe_verdict::healthy;
    r.skipped = out.verdict == probe_verdict::skipped;
    r.error = std::move(out.error);
    caf::anon_send(caf::actor_cast<health_checker_actor>(strong), std::move(r));
  });
  if (!scheduled)
    return;
  auto next = st.cfg.request.spec.interval;
  if (!st.ever_healthy && st.cfg.startup_interval.count() > 0) {
    next = std::min({next, st.cfg.startup_interval, st.startup_next});
    st.startup_next = std::min(st.startup_next * 2, st.cfg.startup_interval);
  }
  self->delayed_send(self, next, tick_atom::value);
}

probe_verdict verdict_of(const probe_result& r) {
  if (r.skipped)
    return probe_verdict::skipped;
  return r.healthy ? probe_verdict::healthy : probe_verdict::unhealthy;
}

} // namespace

health_report health_checker_state::report() const {
  health_report r;
  r.instance = cfg.instance;
  r.probe = to_string(cfg.role);
  r.status = to_string(tracker->status());
  r.consecutive_failures = tracker->consecutive_failures();
  r.consecutive_successes = tracker->consecutive_successes();
  r.last_check_ns = tracker->last_check_ns();
  r.last_error = tracker->last_error();
  return r;
}

health_checker_actor::behavior_type
health_checker(health_checker_actor::stateful_pointer<health_checker_state> self,
               health_checker_config cfg, health_owner_actor owner,
               std::shared_ptr<prober> probes) {
  auto why = validate(cfg.request.spec);
  if (why.empty() && !owner)
    why = "owner: missing";
  if (why.empty() && !probes)
    why = "prober: missing";
  if (!why.empty()) {
    self->quit(
        caf::make_error(ec::invalid_argument, "health check of " + cfg.instance + ": " + why));
    return health_checker_actor::behavior_type::make_empty_behavior();
  }
  auto& st = self->state;
  st.tracker.emplace(cfg.request.spec.failure_threshold, cfg.request.spec.success_threshold);
  st.cfg = std::move(cfg);
  st.owner = std::move(owner);
  st.probes = std::move(probes);
  self->delayed_send(self, st.cfg.request.spec.initial_delay, tick_atom::value);
  return {
      [self](tick_atom) {
        if (self->state.in_flight)
          self->state.due = true;
        else
          start_probe(self);
      },
      [self](ejected_atom) {
        if (!self->state.in_flight)
          start_probe(self, false);
      },
      [self](probe_result& r) {
        auto& st = self->state;
        if (!st.in_flight || r.seq != st.seq)
          return;
        st.in_flight = false;
        st.ever_healthy = st.ever_healthy || r.healthy;
        if (auto now = st.tracker->record(verdict_of(r), now_ns(), r.error))
          self->send(st.owner, health_transition{transition_event(st.cfg.role, *now), st.report()});
        if (st.due) {
          st.due = false;
          start_probe(self);
        }
      },
      [self](get_atom) { return self->state.report(); },
  };
}

} // namespace troupe::apps
