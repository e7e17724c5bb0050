#include "actors/apps/app.hpp"

#include <random>
#include <tuple>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/apps/instance.hpp"
#include "actors/apps/reconcile.hpp"
#include "actors/core/ask_all.hpp"
#include "actors/core/names.hpp"
#include "actors/core/retrying_request.hpp"
#include "actors/metrics/metrics.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

using self_ptr = app_actor::stateful_pointer<app_state_data>;

std::shared_ptr<spdlog::logger> log() {
  return logging::get("apps");
}

void spawn_member(self_ptr self, const std::string& id) {
  auto& st = self->state;
  app_actor me = self;
  instance_actor hdl = st.ctx->spawn_instance
                           ? st.ctx->spawn_instance(self->system(), me, st.target, id)
                           : self->system().spawn(instance, st.ctx, me, st.target, id);
  self->monitor(hdl);
  auto& m = st.instances[id];
  m.handle = hdl;
  m.revision = st.target.revision;
  m.state = "starting";
  m.ready = false;
  m.order = st.next_order++;
}

void reconcile(self_ptr self);

/// Starts `count` instances on the nodes placement names (only this node's
/// here: a cluster leader will start the others through their nodes).
void place(self_ptr self, uint32_t count) {
  auto& st = self->state;
  st.placing += count;
  auto start_here = [self, count](const std::vector<std::string>& nodes) {
    auto& st = self->state;
    st.placing -= count;
    if (st.stopping)
      return;
    for (auto& node : nodes) {
      if (node != st.ctx->node_name) {
        log()->warn("app {}: placement named node {}, which this node cannot start on",
                    st.target.name, node);
        continue;
      }
      spawn_member(self, new_instance_id(st.target.name));
    }
    reconcile(self);
  };
  auto manager = lookup(self->system(), names::apps);
  if (!manager) {
    start_here(std::vector<std::string>(count, st.ctx->node_name));
    return;
  }
  self->request(*manager, std::chrono::seconds(10), place_atom::value, st.target.name, count)
      .then([start_here](std::vector<std::string>& nodes) { start_here(nodes); },
            [self, count](caf::error& err) {
              log()->warn("app {}: placement failed: {}", self->state.target.name,
                          caf::to_string(err));
              self->state.placing -= count;
            });
}

void reconcile(self_ptr self) {
  auto& st = self->state;
  if (st.stopping)
    return;
  std::vector<reconcile_view> views;
  for (auto& [id, m] : st.instances)
    views.push_back({id, m.revision, m.ready, m.leaving, m.order});
  for (uint32_t i = 0; i < st.placing; ++i)
    views.push_back({"(placing)", st.target.revision, false, false, st.next_order});
  auto desired = st.target.up ? static_cast<uint32_t>(std::max(st.target.replicas, 0)) : 0u;
  auto plan = plan_reconcile(desired, st.target.revision, views);
  for (auto& id : plan.drain) {
    auto i = st.instances.find(id);
    if (i == st.instances.end())
      continue;
    i->second.leaving = true;
    log()->info("app {}: draining instance {} (desired {} of revision {})", st.target.name, id,
                desired, st.target.revision);
    self->send(i->second.handle, drain_atom::value);
  }
  if (plan.start > 0)
    place(self, plan.start);
}

bool same(const app_endpoints& a, const app_endpoints& b) {
  auto key = [](const app_endpoints& x) {
    return std::tie(x.exposed, x.host, x.path_prefix, x.strip_prefix, x.port, x.deleted,
                    x.activation_timeout_ms, x.activation_max_pending);
  };
  if (key(a) != key(b) || a.ready.size() != b.ready.size())
    return false;
  for (size_t i = 0; i < a.ready.size(); ++i)
    if (a.ready[i].instance != b.ready[i].instance || a.ready[i].port != b.ready[i].port)
      return false;
  return true;
}

/// Tells the proxy (when it runs) the app's ready instances that are not
/// leaving, and its expose rule, if they changed since it was told last.
void tell_proxy(self_ptr self, bool deleted = false) {
  auto& st = self->state;
  app_endpoints x;
  x.app = st.target.name;
  x.deleted = deleted;
  if (st.expose) {
    x.exposed = true;
    x.host = st.expose->host;
    x.path_prefix = st.expose->path_prefix;
    x.strip_prefix = st.expose->strip_prefix;
    x.port = st.expose->port;
  }
  if (st.target.up && !deleted) {
    x.activation_timeout_ms = st.activation_timeout_ms;
    x.activation_max_pending = st.activation_max_pending;
  }
  if (!deleted)
    for (auto& [id, m] : st.instances)
      if (m.ready && !m.leaving && m.port != 0)
        x.ready.push_back({id, m.port, 0});
  if (st.told && same(*st.told, x))
    return;
  auto proxy = lookup(self->system(), names::traffic);
  if (!proxy)
    return;
  st.told = x;
  self->send(*proxy, std::move(x));
}

/// What the proxy is told of the target's spec: its expose rule and
/// activation (a stored spec parses; none if not).
void read_routing(app_state_data& st) {
  st.expose.reset();
  st.activation_timeout_ms = 0;
  st.activation_max_pending = 0;
  try {
    auto spec = parse_app_spec_json(st.target.spec);
    st.expose = spec.expose;
    auto& p = spec.scaling.policy;
    if (spec.scaling.min_replicas == 0 && p.mode == "auto") {
      st.activation_timeout_ms = static_cast<uint32_t>(p.activation_timeout_seconds) * 1000u;
      st.activation_max_pending = static_cast<uint32_t>(p.activation_max_pending_requests);
    }
  } catch (const std::exception& e) {
    log()->error("app {}: stored spec does not parse: {}", st.target.name, e.what());
  }
}

void maybe_stopped(self_ptr self) {
  auto& st = self->state;
  if (!st.stopping || !st.instances.empty())
    return;
  tell_proxy(self, true);
  for (auto& rp : st.stop_waiters)
    rp.deliver(ok_atom::value);
  st.stop_waiters.clear();
  // Stopped for good (node shutdown, delete): the actor system waits for it.
  self->quit();
}

std::vector<instance_actor> handles(self_ptr self) {
  std::vector<instance_actor> out;
  for (auto& [id, m] : self->state.instances)
    out.push_back(m.handle);
  return out;
}

/// Adds the instances' latest usage, summed, to the app's windows and to
/// the registry's app gauges.
void sample(self_ptr self) {
  auto& st = self->state;
  double cpu = 0;
  double rss = 0;
  for (auto& [id, u] : st.usage) {
    cpu += u.cpu_percent;
    rss += static_cast<double>(u.rss_bytes);
  }
  st.windows.add(self->clock().now(), cpu, rss);
  report_metrics(self->system(), {gauge_delta("apps.cpu", {st.target.name}, cpu),
                                  gauge_delta("apps.memory.rss", {st.target.name}, rss)});
}

/// An instance stopped for good: its record stays as history; records
/// beyond the newest instance_history_kept stopped ones are erased.
void remember_stopped(self_ptr self, const std::string& id) {
  auto& st = self->state;
  st.history.insert(st.history.begin(), id);
  if (st.history.size() <= instance_history_kept)
    return;
  write_batch ops;
  for (size_t i = instance_history_kept; i < st.history.size(); ++i)
    ops.push_back(persistence::erase_instance_op(st.target.name, st.history[i]));
  st.history.resize(instance_history_kept);
  write_to_store(
      self, while_restarting, {}, std::move(ops), [] {},
      [self](const caf::error& err) {
        log()->warn("app {}: old instance records not pruned: {}", self->state.target.name,
                    caf::to_string(err));
      });
}

} // namespace

std::string new_instance_id(const std::string& app) {
  thread_local std::mt19937 rng{std::random_device{}()};
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%06x", static_cast<unsigned>(rng() & 0xffffff));
  return app + "-" + buf;
}

app_actor::behavior_type app(app_actor::stateful_pointer<app_state_data> self,
                             std::shared_ptr<const apps_env> ctx, app_target target) {
  self->state.ctx = std::move(ctx);
  self->state.target = std::move(target);
  read_routing(self->state);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    for (auto i = st.instances.begin(); i != st.instances.end(); ++i) {
      if (i->second.handle.address() != dm.source)
        continue;
      auto id = i->first;
      bool crashed = i->second.state != "stopped" && !st.stopping;
      st.instances.erase(i);
      st.usage.erase(id);
      if (!crashed)
        remember_stopped(self, id);
      if (crashed && dm.reason != caf::exit_reason::normal) {
        // Same id: its successor kills what is left of it before starting.
        log()->error("app {}: instance actor {} ended ({}); restarting it", st.target.name, id,
                     caf::to_string(dm.reason));
        spawn_member(self, id);
      }
      reconcile(self);
      tell_proxy(self);
      maybe_stopped(self);
      return;
    }
  });
  // Stopped instances a previous app actor left in the store count as history.
  if (self->state.ctx->env)
    for (auto& r : persistence::list_instances(*self->state.ctx->env, self->state.target.name))
      if (r.state == "stopped")
        self->state.history.push_back(r.id);
  reconcile(self);
  tell_proxy(self); // routed from the start (an app at zero: held or 503, not 404)
  // Zero turns sampling off (deterministic tests).
  if (self->state.ctx->cfg.sample_interval.count() > 0)
    self->delayed_send(self, self->state.ctx->cfg.sample_interval, sample_atom::value);
  return {
      [self](app_target& t) {
        self->state.target = std::move(t);
        read_routing(self->state);
        reconcile(self);
        tell_proxy(self);
      },
      [self](instance_change& c) {
        auto& st = self->state;
        auto i = st.instances.find(c.id);
        if (i == st.instances.end())
          return;
        i->second.state = c.state;
        i->second.ready = c.ready;
        if (c.port != 0)
          i->second.port = c.port;
        if (c.state == "stopped" || c.state == "draining" || c.state == "stopping")
          i->second.leaving = true;
        reconcile(self);
        tell_proxy(self);
      },
      [self](ejected_atom, const std::string& id) {
        auto& st = self->state;
        auto i = st.instances.find(id);
        if (i == st.instances.end())
          return;
        log()->warn("app {}: the proxy ejected instance {} (connect failures); probing it now",
                    st.target.name, id);
        self->send(i->second.handle, ejected_atom::value);
      },
      [self](tick_atom) { reconcile(self); },
      [self](instance_usage& u) {
        auto& st = self->state;
        if (st.instances.count(u.id) > 0)
          st.usage[u.id] = std::move(u);
      },
      [self](sample_atom) {
        sample(self);
        self->delayed_send(self, self->state.ctx->cfg.sample_interval, sample_atom::value);
      },
      [self](usage_atom) -> caf::result<app_usage> {
        auto& st = self->state;
        auto out = std::make_shared<app_usage>();
        out->name = st.target.name;
        for (auto& [id, u] : st.usage) {
          out->cpu_percent += u.cpu_percent;
          out->rss_bytes += u.rss_bytes;
        }
        st.windows.summarize(self->clock().now(), out->cpu, out->rss);
        auto rp = self->make_response_promise<app_usage>();
        ask_all<instance_usage>(
            self, handles(self), std::chrono::seconds(5),
            [out](instance_usage& x) { out->instances.push_back(std::move(x)); },
            [out, rp](size_t) mutable { rp.deliver(std::move(*out)); }, usage_atom::value);
        return rp;
      },
      [self](get_atom) -> caf::result<app_status> {
        auto& st = self->state;
        auto out = std::make_shared<app_status>();
        out->name = st.target.name;
        out->state = st.target.up ? "up" : "down";
        out->desired = st.target.up ? st.target.replicas : 0;
        out->revision = st.target.revision;
        // `ready` counts from the instances' own answers, not from the
        // changes they sent here: an instance announces a state before it
        // tells the app, so a client that saw the event sees it here too.
        auto rp = self->make_response_promise<app_status>();
        ask_all<instance_status>(
            self, handles(self), std::chrono::seconds(5),
            [out](instance_status& x) { out->instances.push_back(std::move(x)); },
            [self, out, rp](size_t) mutable {
              for (auto& x : out->instances) {
                auto i = self->state.instances.find(x.id);
                if (x.ready && (i == self->state.instances.end() || !i->second.leaving))
                  ++out->ready;
              }
              rp.deliver(std::move(*out));
            },
            get_atom::value);
        return rp;
      },
      [self](shutdown_atom) -> caf::result<ok_atom> {
        auto& st = self->state;
        st.stopping = true;
        auto rp = self->make_response_promise<ok_atom>();
        st.stop_waiters.push_back(rp);
        if (st.instances.empty()) {
          maybe_stopped(self);
          return rp;
        }
        for (auto& [id, m] : st.instances)
          self->request(m.handle, std::chrono::seconds(120), shutdown_atom::value)
              .then([](ok_atom) {}, [](caf::error&) {});
        return rp;
      },
  };
}

} // namespace troupe
