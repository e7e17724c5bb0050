#include "actors/metrics/metrics.hpp"

#include <cmath>
#include <limits>
#include <utility>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/core/ask_all.hpp"
#include "actors/core/names.hpp"
#include "actors/metrics/metrics_export.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

constexpr auto nan = std::numeric_limits<double>::quiet_NaN();

} // namespace

metric_window_stats to_stats(const metrics::window_stats& w, metrics::kind k) {
  metric_window_stats out;
  out.window = metrics::to_string(w.w);
  out.count = w.count;
  out.sum = w.sum;
  out.min = w.min;
  out.max = w.max;
  out.avg = w.avg;
  out.seconds = w.seconds;
  // A counter's window holds increments: its rate is their sum per second.
  out.rate = k == metrics::kind::counter ? (w.seconds > 0 ? w.sum / w.seconds : 0) : w.rate;
  out.p50 = w.p50;
  out.p95 = w.p95;
  out.p99 = w.p99;
  return out;
}

std::vector<metric_window_stats> window_summary(const metrics::window_ring& ring,
                                                metrics::window_ring::clock::time_point now,
                                                metrics::kind k) {
  std::vector<metric_window_stats> out;
  for (auto w : {metrics::window::m1, metrics::window::m15, metrics::window::h1})
    out.push_back(to_stats(ring.stats(now, w), k));
  return out;
}

metric_window_actor::behavior_type
metric_window(metric_window_actor::stateful_pointer<metric_window_state> self,
              const metrics::family* fam, std::vector<std::string> labels,
              double relative_accuracy) {
  auto& st = self->state;
  st.fam = fam;
  st.labels = std::move(labels);
  st.ring = std::make_unique<metrics::window_ring>(self->clock().now(), relative_accuracy);
  if (fam->type == metrics::kind::histogram)
    st.buckets.assign(fam->bounds.size() + 1, 0);
  return {
      [self](metric_delta& d) {
        auto& st = self->state;
        auto now = self->clock().now();
        switch (st.fam->type) {
        case metrics::kind::histogram: {
          auto agg = metrics::aggregate::decode(d.observations);
          if (!agg)
            return; // a malformed delta is dropped, never merged half-way
          st.ring->merge(now, *agg);
          for (size_t i = 0; i < d.buckets.size() && i < st.buckets.size(); ++i)
            st.buckets[i] += d.buckets[i];
          break;
        }
        case metrics::kind::counter:
          st.value += d.value;
          st.ring->add(now, d.value);
          break;
        case metrics::kind::gauge:
          st.value = d.value;
          // The first value counts at once (a one-shot export sees it);
          // afterwards the registry's tick samples the current value.
          if (!st.has_value)
            st.ring->add(now, d.value);
          st.has_value = true;
          break;
        }
      },
      [self](sample_atom) {
        auto& st = self->state;
        auto now = self->clock().now();
        if (st.fam->type == metrics::kind::gauge && st.has_value)
          st.ring->add(now, st.value);
        st.ring->expire(now); // release buckets that left every window
      },
      [self](get_atom) -> metric_snapshot {
        auto& st = self->state;
        auto now = self->clock().now();
        metric_snapshot s;
        s.family = st.fam->key;
        s.labels = st.labels;
        auto& life = st.ring->lifetime();
        s.count = life.count;
        s.sum = life.sum;
        s.max = life.count > 0 ? life.max : nan;
        s.value = st.fam->type == metrics::kind::histogram ? life.sum : st.value;
        s.buckets = st.buckets;
        s.windows = window_summary(*st.ring, now, st.fam->type);
        return s;
      },
  };
}

namespace {

using registry_ptr = metrics_actor::stateful_pointer<metrics_state>;

/// Ticks between two expiry rounds: about a minute.
uint64_t expire_every(caf::timespan sample_interval) {
  auto n = std::chrono::duration_cast<caf::timespan>(std::chrono::minutes(1)) / sample_interval;
  return std::max<uint64_t>(1, static_cast<uint64_t>(n));
}

void route(registry_ptr self, metric_delta& d) {
  auto& st = self->state;
  auto fam = metrics::find_family(d.family);
  if (fam == nullptr)
    return;
  if (!fam->windowed) {
    if (fam->key == "troupe.last_activity")
      st.last_activity = std::max(st.last_activity, d.value);
    else if (fam->key == "metrics.dropped" && d.value > 0) {
      if (!std::exchange(st.recorder_cap_logged, true))
        logging::get("metrics")->warn("metrics.max_series ({}) reached by the request recorder: "
                                      "observations of further series are dropped (counted in "
                                      "troupe_metrics_dropped_series_total)",
                                      st.cfg.max_series);
      st.dropped += static_cast<uint64_t>(d.value); // refused by a recorder
    }
    return;
  }
  if (st.cfg.mode == "proxy" && fam->key != "redis.sse.connections")
    return; // proxy mode exports its upstreams' series, not this node's
  auto id = metrics::series_id(*fam, d.labels);
  auto i = st.by_id.find(id);
  if (i == st.by_id.end()) {
    if (static_cast<int>(st.by_id.size()) >= st.cfg.max_series) {
      ++st.dropped;
      if (!std::exchange(st.cap_logged, true))
        logging::get("metrics")->warn("metrics.max_series ({}) reached: new series such as {} are "
                                      "dropped (counted in troupe_metrics_dropped_series_total)",
                                      st.cfg.max_series, id);
      return;
    }
    // Linked: a series lives and dies with its registry.
    auto hdl = self->spawn<caf::linked>(metric_window, fam, d.labels, st.cfg.relative_accuracy);
    i = st.by_id.emplace(id, metrics_state::series{fam, d.labels, hdl}).first;
    if (fam->type == metrics::kind::gauge)
      st.gauges.push_back(hdl);
  }
  self->send(i->second.hdl, std::move(d));
}

/// Asks every series for its snapshot; `done` gets them all (in no order).
/// Callers arriving while a collection runs wait for it and share its result.
void collect(registry_ptr self, std::function<void(const metric_snapshots&)> done) {
  auto& st = self->state;
  st.collect_waiters.push_back(std::move(done));
  if (st.collect_waiters.size() > 1)
    return; // one is in flight
  auto acc = std::make_shared<metric_snapshots>();
  auto finish_all = [self, acc] {
    auto waiters = std::move(self->state.collect_waiters);
    self->state.collect_waiters.clear();
    for (auto& w : waiters)
      w(*acc);
  };
  if (st.by_id.empty()) {
    finish_all();
    return;
  }
  acc->reserve(st.by_id.size());
  std::vector<metric_window_actor> series;
  series.reserve(st.by_id.size());
  for (auto& [id, s] : st.by_id)
    series.push_back(s.hdl);
  // Shorter than the callers' own timeouts (the HTTP bridge waits 10 s):
  // a hung series costs a scrape that series, not the whole scrape.
  ask_all<metric_snapshot>(
      self, series, std::chrono::seconds(5),
      [acc](metric_snapshot& snap) { acc->push_back(std::move(snap)); },
      [self, finish_all](size_t timed_out) {
        if (timed_out > 0) {
          self->state.collect_timeouts += timed_out;
          logging::get("metrics")->warn("{} series did not answer within 5 s; this scrape leaves "
                                        "them out ({} so far)",
                                        timed_out, self->state.collect_timeouts);
        }
        finish_all();
      },
      get_atom::value);
}

metrics::registry_view view(registry_ptr self, const metric_snapshots& local) {
  auto& st = self->state;
  metrics::registry_view v;
  v.local = &local;
  v.proxied = &st.proxied;
  v.last_activity = st.last_activity;
  v.heartbeat = st.heartbeat;
  v.series = st.by_id.size();
  v.dropped = st.dropped;
  v.node = st.node;
  v.mode = st.cfg.mode;
  return v;
}

} // namespace

metrics_actor::behavior_type metrics_registry(metrics_actor::stateful_pointer<metrics_state> self,
                                              metrics_config cfg, std::string node,
                                              std::vector<metric_source> sources) {
  auto& st = self->state;
  st.names = metrics::naming{cfg.mapping};
  st.cfg = std::move(cfg);
  st.node = std::move(node);
  st.sources = std::move(sources);
  st.last_activity = static_cast<double>(now_ns()) / 1e9;
  self->delayed_send(self, st.cfg.sample_interval, tick_atom::value);
  return {
      [self](metric_deltas& ds) {
        for (auto& d : ds)
          route(self, d);
      },
      [self](activity_atom) { self->state.last_activity = static_cast<double>(now_ns()) / 1e9; },
      [self](tick_atom) {
        auto& st = self->state;
        ++st.heartbeat;
        for (auto& src : st.sources)
          for (auto& d : src())
            route(self, d);
        // Gauges are sampled every tick; every minute or so all series are
        // told too, so that idle ones release their expired buckets.
        if (st.heartbeat % expire_every(st.cfg.sample_interval) == 0) {
          for (auto& [id, s] : st.by_id)
            self->send(s.hdl, sample_atom::value);
        } else {
          for (auto& g : st.gauges)
            self->send(g, sample_atom::value);
        }
        self->delayed_send(self, st.cfg.sample_interval, tick_atom::value);
      },
      [self](proxied_atom, const std::string& upstream, metric_snapshots& snaps) {
        if (snaps.empty())
          self->state.proxied.erase(upstream); // failing upstream: its series go
        else
          self->state.proxied[upstream] = std::move(snaps);
      },
      [self](get_atom) -> caf::result<metric_snapshots> {
        auto rp = self->make_response_promise<metric_snapshots>();
        collect(self, [self, rp](const metric_snapshots& collected) mutable {
          auto local = collected;
          for (auto& [upstream, snaps] : self->state.proxied)
            local.insert(local.end(), snaps.begin(), snaps.end());
          rp.deliver(std::move(local));
        });
        return rp;
      },
      [self](prometheus_atom) -> caf::result<std::string> {
        auto& st = self->state;
        auto now = self->clock().now();
        if (st.has_cache && st.cfg.scrape_ttl.count() > 0 && now - st.cached_at < st.cfg.scrape_ttl)
          return st.cached;
        auto rp = self->make_response_promise<std::string>();
        collect(self, [self, rp](const metric_snapshots& local) mutable {
          auto& st = self->state;
          auto text = metrics::render_prometheus(view(self, local), st.names);
          if (st.cfg.scrape_ttl.count() > 0) {
            st.cached = text;
            st.cached_at = self->clock().now();
            st.has_cache = true;
          }
          rp.deliver(std::move(text));
        });
        return rp;
      },
      [](shutdown_atom) { return ok_atom::value; },
      [self](monitoring_atom) -> caf::result<std::string> {
        auto rp = self->make_response_promise<std::string>();
        collect(self, [self, rp](const metric_snapshots& local) mutable {
          rp.deliver(metrics::render_monitoring(view(self, local), self->state.names));
        });
        return rp;
      },
  };
}

void report_metrics(caf::actor_system& sys, metric_deltas deltas) {
  if (deltas.empty())
    return;
  if (auto m = lookup(sys, names::metrics))
    caf::anon_send(*m, std::move(deltas));
}

metric_delta gauge_delta(std::string family, std::vector<std::string> labels, double value) {
  metric_delta d;
  d.family = std::move(family);
  d.labels = std::move(labels);
  d.value = value;
  return d;
}

metric_delta histogram_delta(const metrics::family& fam, std::vector<std::string> labels,
                             double value, double relative_accuracy) {
  metric_delta d;
  d.family = fam.key;
  d.labels = std::move(labels);
  metrics::aggregate agg{relative_accuracy};
  agg.add(value); // ignores NaN and infinities
  d.observations = agg.encode();
  d.buckets.assign(fam.bounds.size() + 1, 0);
  if (std::isfinite(value))
    ++d.buckets[metrics::bucket_index(fam.bounds, value)];
  return d;
}

} // namespace troupe
