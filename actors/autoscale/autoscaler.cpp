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
constexpr int64_t min_rate_interval_ns = 1'000'000'000;

std::shared_ptr<spdlog::logger> log() {
  return logging::get("autoscale");
}

void evaluate(self_ptr self);

/// The actor clock (steady; the test coordinator's in tests): windows,
/// cooldowns and rates do not jump with the wall clock.
int64_t clock_ns(self_ptr self) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             self->clock().now().time_since_epoch())
      .count();
}

/// The evaluation is over (decided or given up): an activation asked
/// meanwhile goes next.
void finish(self_ptr self) {
  auto& st = self->state;
  st.evaluating = false;
  if (st.again) {
    st.again = false;
    evaluate(self);
  }
}

/// Decides on a complete observation and sends what is worth recording.
void decide(self_ptr self, const observation_ptr& o) {
  auto& st = self->state;
  ++st.evaluations;
  // Replicas someone else changed (the API's /scale) count for the rate
  // policies and the cooldown as the autoscaler's own do. Still at the
  // last change's `from`: that change was not applied (the replicas moved
  // meanwhile, the app went down), not a change of someone else's.
  if (st.expected >= 0 && o->current != st.expected && o->current != st.expected_from)
    st.engine->note_change(o->at_ns, st.expected, o->current);
  auto d = st.engine->evaluate(*o);
  st.expected = d && d->changed() ? d->to : o->current;
  st.expected_from = o->current;
  if (!d) {
    finish(self);
    return;
  }
  st.last_rule = d->rule;
  st.last_reason = d->reason;
  if (d->changed())
    log()->info("app {}: {} -> {} replicas ({}: {})", st.app, d->from, d->to, d->rule, d->reason);
  auto apps = lookup(self->system(), names::apps);
  if (!apps) {
    finish(self);
    return;
  }
  // Recorded with wall-clock time (the engine's is the actor clock).
  autoscale_record r{st.app,    now_ns(),  d->from,     d->to,     d->reason,  d->rule,
                     d->metric, d->window, d->observed, d->target, d->proposal};
  // The evaluation ends with the app manager's answer, which comes once the
  // change is stored and applied: an evaluation asked meanwhile (an
  // activation) reads the new desired count.
  self->request(*apps, ask_timeout, scale_atom::value, std::move(r))
      .then([self](ok_atom) { finish(self); },
            [self](caf::error& err) {
              log()->warn("app {}: decision not applied: {}", self->state.app, caf::to_string(err));
              finish(self);
            });
}

/// queue.redis: LLEN of the key (blocking, bounded by queue_redis_timeout;
/// a failure is a missing sample).
void read_redis(self_ptr self, const observation_ptr& o) {
  auto& st = self->state;
  if (!st.redis)
    return;
  std::string err;
  auto r = st.redis->command({"LLEN", st.redis_key}, &err);
  if (r && r->type == redis::reply::kind::integer) {
    o->queue_redis = static_cast<double>(r->integer);
    if (!st.redis_error.empty())
      log()->info("app {}: queue.redis answers again", st.app);
    st.redis_error.clear();
    return;
  }
  if (r) // an error reply (WRONGTYPE: the key is not a list) or another type
    err = r->type == redis::reply::kind::error ? r->str : "LLEN did not answer a number";
  if (err != st.redis_error)
    log()->warn("app {}: queue.redis: {} (a missing sample: no scale-in)", st.app, err);
  st.redis_error = err;
}

/// queue.jobs: the job controller's count of queued jobs with the label.
void read_queues(self_ptr self, const observation_ptr& o) {
  auto& st = self->state;
  read_redis(self, o);
  auto jobs = st.jobs_label.empty() ? std::nullopt : lookup(self->system(), names::jobs);
  if (!jobs) {
    decide(self, o);
    return;
  }
  self->request(*jobs, ask_timeout, count_atom::value, st.jobs_label)
      .then(
          [self, o](uint64_t n) {
            o->queue_jobs = static_cast<double>(n);
            decide(self, o);
          },
          [self, o](caf::error&) { decide(self, o); });
}

/// The request counter and the latency window, from the registry.
void read_requests(self_ptr self, const observation_ptr& o) {
  auto registry = lookup(self->system(), names::metrics);
  if (!registry) {
    read_queues(self, o);
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
            // An evaluation less than a second after the last (an
            // activation) keeps the last baseline: a rate over milliseconds
            // says nothing. A counter that went down (the registry started
            // over) is a missing sample and a new baseline.
            auto elapsed = o->at_ns - st.last_at_ns;
            if (st.last_total >= 0 && elapsed < min_rate_interval_ns && total >= st.last_total)
              return read_queues(self, o);
            if (st.last_total >= 0 && total >= st.last_total)
              o->rps = (total - st.last_total) / (static_cast<double>(elapsed) / 1e9);
            st.last_total = total;
            st.last_at_ns = o->at_ns;
            read_queues(self, o);
          },
          [self, o](caf::error&) { read_queues(self, o); });
}

/// Connections and the last request, from the traffic actor (without a
/// proxy there is no request rate either).
void read_traffic(self_ptr self, const observation_ptr& o) {
  auto traffic = lookup(self->system(), names::traffic);
  if (!traffic) {
    read_queues(self, o);
    return;
  }
  self->request(*traffic, ask_timeout, get_atom::value, self->state.app)
      .then(
          [self, o](app_traffic& t) {
            o->connections = static_cast<double>(t.active_connections);
            // The proxy keeps wall-clock time; the engine wants its age.
            if (t.last_request_ns > 0)
              o->last_request_ns = o->at_ns - std::max<int64_t>(0, now_ns() - t.last_request_ns);
            o->pending = static_cast<int64_t>(t.pending);
            read_requests(self, o);
          },
          [self, o](caf::error&) { read_queues(self, o); });
}

void evaluate(self_ptr self) {
  auto& st = self->state;
  if (st.evaluating) {
    st.again = true;
    return;
  }
  auto apps = lookup(self->system(), names::apps);
  if (!apps)
    return;
  st.evaluating = true;
  auto o = std::make_shared<autoscale::observation>();
  o->at_ns = clock_ns(self);
  auto app = self->state.app;
  self->request(*apps, ask_timeout, get_atom::value, app)
      .then(
          [self, o, apps = *apps, app](app_status& s) {
            if (s.state != "up") {
              finish(self);
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
          [self](caf::error&) { finish(self); });
}

} // namespace

autoscaler_actor::behavior_type
autoscaler(autoscaler_actor::stateful_pointer<autoscaler_state> self, std::string app,
           app_scaling_policy policy, autoscale::bounds limits) {
  auto& st = self->state;
  st.app = std::move(app);
  st.interval = std::chrono::seconds(std::max(1, policy.evaluation_seconds));
  if (policy.queue_redis) {
    st.redis_key = policy.queue_redis->key;
    std::string why;
    if (auto where = redis::parse_url(policy.queue_redis->url, &why))
      st.redis = std::make_unique<redis::client>(*where, queue_redis_timeout);
    else
      st.redis_error = "queue.redis.url: " + why; // validated at registration
  }
  if (policy.queue_jobs)
    st.jobs_label = policy.queue_jobs->label;
  st.engine.emplace(std::move(policy), limits, clock_ns(self));
  self->delayed_send(self, st.interval, tick_atom::value);
  return {
      [self](tick_atom) {
        // One tick chain, whatever the evaluations take.
        self->delayed_send(self, self->state.interval, tick_atom::value);
        evaluate(self);
      },
      [self](activate_atom) {
        ++self->state.activations;
        evaluate(self);
      },
      [self](status_atom) {
        auto& st = self->state;
        component_status s;
        s.name = autoscaler_state::name;
        s.healthy = true;
        caf::put(s.fields, "app", st.app);
        caf::put(s.fields, "evaluations", st.evaluations);
        caf::put(s.fields, "last_rule", st.last_rule);
        caf::put(s.fields, "last_reason", st.last_reason);
        caf::put(s.fields, "activations", st.activations);
        if (!st.redis_key.empty())
          caf::put(s.fields, "queue_redis_error", st.redis_error);
        return s;
      },
  };
}

} // namespace troupe
