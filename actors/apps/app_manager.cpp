#include "actors/apps/app_manager.hpp"

#include <algorithm>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/apps/app.hpp"
#include "actors/apps/app_spec.hpp"
#include "actors/apps/scaling_view.hpp"
#include "actors/core/ask_all.hpp"
#include "actors/core/retrying_request.hpp"
#include "http/proxy_routes.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/orphans.hpp"

namespace troupe {

namespace {

using self_ptr = app_manager_actor::stateful_pointer<app_manager_state>;
using entry = app_manager_state::entry;
using nlohmann::json;
namespace as = persistence::app_state;

std::shared_ptr<spdlog::logger> log() {
  return logging::get("apps");
}

/// Scaling decisions kept per app (GET /apps/{name}/scaling shows the last 100).
constexpr size_t app_scaling_kept = 1000;

caf::error invalid(std::string msg) {
  return caf::make_error(ec::invalid_argument, std::move(msg));
}

void read_bounds(entry& e, const app_spec& spec) {
  e.min_replicas = spec.scaling.min_replicas;
  e.max_replicas = spec.scaling.max_replicas;
}

app_target target_of(const entry& e, std::string reason) {
  return app_target{e.rec.name,
                    e.rec.revision,
                    e.rec.spec,
                    e.rec.desired_state == as::up,
                    e.rec.desired_replicas,
                    std::move(reason)};
}

/// Instances the up apps want, `name` counted with `replicas` instead.
int64_t wanted_instances(self_ptr self, const std::string& name, int32_t replicas) {
  int64_t n = replicas;
  for (auto& [other, e] : self->state.apps)
    if (other != name && e.rec.desired_state == as::up)
      n += e.rec.desired_replicas;
  return n;
}

caf::error check_instance_limit(self_ptr self, const std::string& name, int32_t replicas) {
  auto max = self->state.ctx->cfg.max_instances;
  if (wanted_instances(self, name, replicas) > max)
    return invalid("replicas: " + std::to_string(replicas) + " would take the node past " +
                   "apps.max_instances (" + std::to_string(max) + " instances of all apps)");
  return {};
}

void sync_autoscaler(self_ptr self, const std::string& name);

/// Tells the app actor (started when the app is up and has none).
void drive(self_ptr self, entry& e, const std::string& reason) {
  sync_autoscaler(self, e.rec.name);
  auto t = target_of(e, reason);
  if (!e.actor) {
    if (!t.up)
      return;
    e.actor = self->system().spawn(app, self->state.ctx, t);
    self->monitor(e.actor);
    self->state.spawned->push_back(e.actor);
    return;
  }
  self->send(e.actor, std::move(t));
}

/// Persists `ops`, then publishes `events` and runs `then`; a failed write
/// answers the promise with the error.
template <class T, class Then>
caf::result<T> persist(self_ptr self, write_batch ops,
                       std::vector<std::pair<std::string, json>> events, Then then) {
  auto rp = self->make_response_promise<T>();
  auto store = lookup(self->system(), names::store);
  if (!store) {
    rp.deliver(caf::make_error(ec::unavailable, "the store is not running"));
    return rp;
  }
  self->request(*store, std::chrono::seconds(30), write_atom::value, std::move(ops))
      .then(
          [self, rp, events, then](write_result&) mutable {
            for (auto& [type, data] : events)
              publish_app_event(self, *self->state.ctx, type, data);
            rp.deliver(then());
          },
          [rp](caf::error& err) mutable { rp.deliver(err); });
  return rp;
}

persistence::scaling_decision decision(const std::string& app, int32_t from, int32_t to,
                                       const std::string& reason) {
  persistence::scaling_decision d;
  d.app = app;
  d.ts_ns = now_ns();
  d.from = from;
  d.to = to;
  d.reason = reason;
  return d;
}

/// An app.scaled / app.scale_held event's data: the record as
/// /apps/{name}/scaling shows it, with the app.
json scaled(const persistence::scaling_decision& d) {
  auto j = scaling_json(d);
  j["app"] = d.app;
  return j;
}

/// The app's autoscaler runs while the app is up with `scaling.policy.mode:
/// auto`, with the policy of the stored spec (a new spec, a new one).
void sync_autoscaler(self_ptr self, const std::string& name) {
  auto& st = self->state;
  auto i = st.apps.find(name);
  std::optional<app_spec> spec;
  if (i != st.apps.end() && i->second.rec.desired_state == as::up) {
    try {
      spec = parse_app_spec_json(i->second.rec.spec);
    } catch (const std::exception&) {
      spec.reset(); // stored specs were validated; nothing to scale by
    }
    if (spec && spec->scaling.policy.mode != "auto")
      spec.reset();
  }
  auto s = st.scalers.find(name);
  if (s != st.scalers.end() && (!spec || s->second.spec != i->second.rec.spec)) {
    caf::anon_send_exit(s->second.actor, caf::exit_reason::user_shutdown);
    st.scalers.erase(s);
    s = st.scalers.end();
  }
  if (!spec || s != st.scalers.end() || !st.ctx->autoscaler)
    return;
  autoscale::bounds b;
  b.min_replicas = spec->scaling.min_replicas;
  b.max_replicas = spec->scaling.max_replicas;
  b.cpu_millis = spec->resources.cpu_millis;
  b.memory_bytes = spec->resources.memory_bytes;
  auto a = st.ctx->autoscaler(self->system(), name, spec->scaling.policy, b);
  st.scalers[name] = {a, i->second.rec.spec};
  st.spawned_scalers->push_back(a);
  log()->info("app {}: autoscaler started (every {} s)", name,
              spec->scaling.policy.evaluation_seconds);
}

/// Refuses an expose rule that collides with another app's (the same own
/// port, or the same host and path prefix): the proxy could not tell them apart.
caf::error check_expose(self_ptr self, const app_spec& spec) {
  if (!spec.expose)
    return {};
  http::route_table routes;
  try {
    for (auto& [other, e] : self->state.apps)
      if (other != spec.name)
        if (auto rule = parse_app_spec_json(e.rec.spec).expose)
          routes.set(other, rule);
    routes.set(spec.name, spec.expose);
  } catch (const std::exception& e) {
    return invalid(e.what());
  }
  return {};
}

caf::result<uint32_t> on_register(self_ptr self, const std::string& spec_json) {
  auto& st = self->state;
  app_spec spec;
  try {
    spec = parse_app_spec_json(spec_json);
  } catch (const std::exception& e) {
    return invalid(e.what());
  }
  if (auto err = check_expose(self, spec))
    return err;
  auto now = now_ns();
  auto i = st.apps.find(spec.name);
  bool created = i == st.apps.end();
  if (created && st.apps.size() >= static_cast<size_t>(st.ctx->cfg.max_apps))
    return invalid("metadata.name: the node holds apps.max_apps (" +
                   std::to_string(st.ctx->cfg.max_apps) + ") apps already");
  entry e = created ? entry{} : i->second;
  if (created) {
    e.rec.name = spec.name;
    e.rec.revision = 1;
    e.rec.created_at = now;
    e.rec.desired_state = as::down;
    e.rec.desired_replicas = spec.scaling.replicas;
  } else {
    e.rec.revision += 1;
    // Keep the current count inside the new bounds.
    e.rec.desired_replicas =
        std::clamp(e.rec.desired_replicas, spec.scaling.min_replicas, spec.scaling.max_replicas);
  }
  if (e.rec.desired_state == as::up)
    if (auto err = check_instance_limit(self, spec.name, e.rec.desired_replicas))
      return err;
  e.rec.spec = to_json(spec);
  e.rec.updated_at = now;
  read_bounds(e, spec);
  auto type = created ? "app.registered" : "app.updated";
  json data{{"app", spec.name},
            {"revision", e.rec.revision},
            {"reason", created ? "registered"
                               : "re-registered: instances are replaced one at a "
                                 "time when the app is up"}};
  return persist<uint32_t>(self, {persistence::put_app_op(e.rec)}, {{type, data}},
                           [self, e]() mutable {
                             auto& slot = self->state.apps[e.rec.name];
                             e.actor = slot.actor;
                             slot = e;
                             drive(self, slot, "register");
                             return e.rec.revision;
                           });
}

/// Sets desired state and replicas of `name`, recording the decision.
caf::result<ok_atom> set_desired(self_ptr self, const std::string& name, const char* state,
                                 int32_t replicas, const std::string& reason,
                                 std::vector<std::pair<std::string, json>> events,
                                 const persistence::scaling_decision* full = nullptr) {
  auto& st = self->state;
  auto i = st.apps.find(name);
  if (i == st.apps.end())
    return caf::make_error(ec::not_found, "app " + name);
  auto e = i->second;
  int32_t before = e.rec.desired_state == as::up ? e.rec.desired_replicas : 0;
  e.rec.desired_state = state;
  e.rec.desired_replicas = replicas;
  int32_t after = e.rec.desired_state == as::up ? e.rec.desired_replicas : 0;
  if (after > 0)
    if (auto err = check_instance_limit(self, name, after))
      return err;
  e.rec.updated_at = now_ns();
  write_batch ops{persistence::put_app_op(e.rec)};
  if (before != after) {
    // The history is bounded: the newest app_scaling_kept decisions per app.
    if (auto prune = persistence::prune_scaling_op(*st.ctx->env, name, app_scaling_kept - 1))
      ops.push_back(std::move(*prune));
    auto d = full ? *full : decision(name, before, after, reason);
    ops.push_back(persistence::scaling_op(d));
    events.emplace_back("app.scaled", scaled(d));
  }
  return persist<ok_atom>(self, std::move(ops), std::move(events), [self, e, reason]() mutable {
    auto& slot = self->state.apps[e.rec.name];
    e.actor = slot.actor;
    slot = e;
    drive(self, slot, reason);
    return ok_atom::value;
  });
}

/// After the orphans are gone: old instance records go (they were this
/// node's previous run), the apps that were up start.
void restore(self_ptr self) {
  auto& st = self->state;
  st.recovering = false;
  write_batch ops;
  for (auto& r : persistence::list_all_instances(*st.ctx->env))
    if (r.node == st.ctx->node_name)
      ops.push_back(persistence::erase_instance_op(r.app, r.id));
  auto start = [self] {
    for (auto& [name, e] : self->state.apps)
      if (e.rec.desired_state == as::up) {
        log()->info("restoring app {} (revision {}, {} replicas)", name, e.rec.revision,
                    e.rec.desired_replicas);
        drive(self, e, "restore");
      }
  };
  if (ops.empty()) {
    start();
    return;
  }
  write_to_store(self, while_restarting, {}, std::move(ops), start, [start](const caf::error& err) {
    log()->error("old instance records not removed: {}", caf::to_string(err));
    start();
  });
}

void recover(self_ptr self) {
  auto& st = self->state;
  for (auto& rec : persistence::list_apps(*st.ctx->env)) {
    entry e;
    e.rec = rec;
    try {
      read_bounds(e, parse_app_spec_json(rec.spec));
    } catch (const std::exception& ex) {
      log()->error("app {}: stored spec unreadable ({}); left down", rec.name, ex.what());
      e.rec.desired_state = as::down;
    }
    st.apps.emplace(rec.name, std::move(e));
  }
  std::vector<std::string> ids;
  std::vector<int64_t> pgids;
  for (auto& r : persistence::list_all_instances(*st.ctx->env))
    if (r.node == st.ctx->node_name && r.state != "stopped") {
      ids.push_back(r.id);
      pgids.push_back(r.pgid);
    }
  if (ids.empty() || !st.ctx->recover_orphans) {
    self->send(self, recovered_atom::value);
    return;
  }
  // The /proc scan blocks: it runs on the process io's blocking thread.
  caf::weak_actor_ptr weak = self->ctrl();
  st.ctx->io->post_blocking([weak, ids, pgids] {
    auto killed = orphans::kill_tagged("TROUPE_INSTANCE", ids, pgids);
    uint64_t n = 0;
    for (auto k : killed)
      n += k;
    if (n > 0)
      log()->warn("recovery: {} processes left by the previous run of {} instances killed", n,
                  ids.size());
    if (auto hdl = caf::actor_cast<app_manager_actor>(weak))
      caf::anon_send(hdl, recovered_atom::value);
  });
}

app_status summary(const entry& e) {
  app_status s;
  s.name = e.rec.name;
  s.state = e.rec.desired_state;
  s.desired = e.rec.desired_state == as::up ? e.rec.desired_replicas : 0;
  s.revision = e.rec.revision;
  return s;
}

} // namespace

app_manager_actor::behavior_type
app_manager(app_manager_actor::stateful_pointer<app_manager_state> self,
            std::shared_ptr<const apps_env> ctx) {
  self->state.ctx = std::move(ctx);
  // Apps (and through them their instances) end with the manager, whatever
  // ends it; its successor restores them.
  self->attach_functor([spawned = self->state.spawned, scalers = self->state.spawned_scalers] {
    for (auto& a : *spawned)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    for (auto& a : *scalers)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    drop_terminated(*self->state.spawned, dm.source);
    for (auto& [name, e] : self->state.apps)
      if (e.actor && e.actor.address() == dm.source) {
        e.actor = nullptr;
        if (dm.reason != caf::exit_reason::normal && e.rec.desired_state == as::up) {
          log()->error("app actor {} ended ({}); restarting it", name, caf::to_string(dm.reason));
          drive(self, e, "app actor restarted");
        }
        return;
      }
  });
  recover(self);
  return {
      [self](register_atom, const std::string& spec) { return on_register(self, spec); },
      [self](up_atom, const std::string& name) -> caf::result<ok_atom> {
        auto i = self->state.apps.find(name);
        if (i == self->state.apps.end())
          return caf::make_error(ec::not_found, "app " + name);
        json data{{"app", name}, {"revision", i->second.rec.revision}, {"reason", "up requested"}};
        return set_desired(self, name, as::up, i->second.rec.desired_replicas, "up",
                           {{"app.up", data}});
      },
      [self](down_atom, const std::string& name) -> caf::result<ok_atom> {
        auto i = self->state.apps.find(name);
        if (i == self->state.apps.end())
          return caf::make_error(ec::not_found, "app " + name);
        json data{{"app", name}, {"reason", "down requested: every instance drains"}};
        return set_desired(self, name, as::down, i->second.rec.desired_replicas, "down",
                           {{"app.down", data}});
      },
      [self](scale_atom, const std::string& name, int32_t n,
             const std::string& reason) -> caf::result<ok_atom> {
        auto i = self->state.apps.find(name);
        if (i == self->state.apps.end())
          return caf::make_error(ec::not_found, "app " + name);
        auto& e = i->second;
        if (n < e.min_replicas || n > e.max_replicas)
          return invalid("replicas: " + std::to_string(n) + " is outside [" +
                         std::to_string(e.min_replicas) + ", " + std::to_string(e.max_replicas) +
                         "] (spec.scaling.minReplicas, maxReplicas)");
        return set_desired(self, name, e.rec.desired_state.c_str(), n, reason, {});
      },
      [self](scale_atom, autoscale_record& r) -> caf::result<ok_atom> {
        auto& st = self->state;
        auto i = st.apps.find(r.app);
        if (i == st.apps.end())
          return caf::make_error(ec::not_found, "app " + r.app);
        auto& e = i->second;
        if (e.rec.desired_state != as::up)
          return ok_atom::value; // down meanwhile: nothing to scale
        const auto& d = r;       // stored as the autoscaler recorded it
        if (r.to != r.from) {
          if (r.from != e.rec.desired_replicas || r.to < e.min_replicas || r.to > e.max_replicas)
            return ok_atom::value; // the replicas or bounds moved meanwhile: the next evaluation
          return set_desired(self, r.app, as::up, r.to, r.reason, {}, &d);
        }
        write_batch ops;
        if (auto prune = persistence::prune_scaling_op(*st.ctx->env, r.app, app_scaling_kept - 1))
          ops.push_back(std::move(*prune));
        ops.push_back(persistence::scaling_op(d));
        return persist<ok_atom>(self, std::move(ops), {{"app.scale_held", scaled(d)}},
                                [] { return ok_atom::value; });
      },
      [self](policy_atom, const std::string& name,
             const std::string& spec_json) -> caf::result<ok_atom> {
        auto i = self->state.apps.find(name);
        if (i == self->state.apps.end())
          return caf::make_error(ec::not_found, "app " + name);
        app_spec spec;
        try {
          spec = parse_app_spec_json(spec_json);
        } catch (const std::exception& ex) {
          return invalid(ex.what());
        }
        if (spec.name != name)
          return invalid("metadata.name: the policy belongs to app " + name);
        auto e = i->second;
        e.rec.spec = to_json(spec);
        e.rec.updated_at = now_ns();
        json data{{"app", name}, {"revision", e.rec.revision}, {"reason", "scaling policy stored"}};
        return persist<ok_atom>(self, {persistence::put_app_op(e.rec)}, {{"app.updated", data}},
                                [self, e]() mutable {
                                  auto& slot = self->state.apps[e.rec.name];
                                  e.actor = slot.actor;
                                  slot = e;
                                  if (slot.actor)
                                    self->send(slot.actor, target_of(slot, "policy"));
                                  sync_autoscaler(self, e.rec.name);
                                  return ok_atom::value;
                                });
      },
      [self](caf::delete_atom, const std::string& name) -> caf::result<ok_atom> {
        auto i = self->state.apps.find(name);
        if (i == self->state.apps.end())
          return caf::make_error(ec::not_found, "app " + name);
        json data{{"app", name}, {"reason", "deleted: instances stop, logs stay until retention"}};
        std::vector<std::pair<std::string, json>> events;
        if (i->second.rec.desired_state == as::up)
          events.emplace_back("app.down", data);
        events.emplace_back("app.deleted", data);
        return persist<ok_atom>(
            self, persistence::purge_app_ops(*self->state.ctx->env, name), std::move(events),
            [self, name] {
              auto& apps = self->state.apps;
              auto i = apps.find(name);
              if (i != apps.end() && i->second.actor) {
                auto hdl = i->second.actor;
                self->demonitor(hdl.address());
                self->request(hdl, std::chrono::seconds(120), shutdown_atom::value)
                    .then([self, hdl](ok_atom) { self->send_exit(hdl, caf::exit_reason::normal); },
                          [](caf::error&) {});
              }
              apps.erase(name);
              sync_autoscaler(self, name);
              return ok_atom::value;
            });
      },
      [self](get_atom) -> caf::result<app_statuses> {
        auto& st = self->state;
        auto out = std::make_shared<app_statuses>();
        std::vector<app_actor> running;
        for (auto& [name, e] : st.apps) {
          out->push_back(summary(e));
          if (e.actor)
            running.push_back(e.actor);
        }
        auto rp = self->make_response_promise<app_statuses>();
        ask_all<app_status>(
            self, running, std::chrono::seconds(10),
            [out](app_status& s) {
              for (auto& x : *out)
                if (x.name == s.name)
                  x.ready = s.ready;
            },
            [out, rp](size_t) mutable { rp.deliver(std::move(*out)); }, get_atom::value);
        return rp;
      },
      [self](get_atom, const std::string& name) -> caf::result<app_status> {
        auto i = self->state.apps.find(name);
        if (i == self->state.apps.end())
          return caf::make_error(ec::not_found, "app " + name);
        if (!i->second.actor)
          return summary(i->second);
        auto rp = self->make_response_promise<app_status>();
        auto base = summary(i->second);
        self->request(i->second.actor, std::chrono::seconds(10), get_atom::value)
            .then(
                [rp, base](app_status& s) mutable {
                  s.state = base.state;
                  s.desired = base.desired;
                  rp.deliver(std::move(s));
                },
                [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](place_atom, const std::string&, uint32_t count) {
        return std::vector<std::string>(count, self->state.ctx->node_name);
      },
      [self](recovered_atom) { restore(self); },
      [self](ejected_atom, const std::string& app, const std::string& id) {
        auto i = self->state.apps.find(app);
        if (i != self->state.apps.end() && i->second.actor)
          self->send(i->second.actor, ejected_atom::value, id);
      },
      [self](activate_atom, const std::string& app) {
        // Only an app with an autoscaler holds requests at zero.
        auto s = self->state.scalers.find(app);
        if (s != self->state.scalers.end())
          self->send(s->second.actor, activate_atom::value);
      },
      [self](shutdown_atom) -> caf::result<ok_atom> {
        std::vector<app_actor> running;
        for (auto& [name, e] : self->state.apps)
          if (e.actor)
            running.push_back(e.actor);
        auto rp = self->make_response_promise<ok_atom>();
        ask_all<ok_atom>(
            self, running, std::chrono::seconds(60), [](ok_atom) {},
            [rp](size_t) mutable { rp.deliver(ok_atom::value); }, shutdown_atom::value);
        return rp;
      },
      [self](usage_atom, const std::string& name) -> caf::result<app_usage> {
        auto i = self->state.apps.find(name);
        if (i == self->state.apps.end())
          return caf::make_error(ec::not_found, "app " + name);
        if (!i->second.actor) {
          app_usage none;
          none.name = name;
          return none;
        }
        return self->delegate(i->second.actor, usage_atom::value);
      },
      [self](status_atom) {
        auto& st = self->state;
        component_status s;
        s.name = app_manager_state::name;
        s.healthy = !st.recovering;
        uint64_t up = 0;
        for (auto& [name, e] : st.apps)
          up += e.rec.desired_state == as::up ? 1 : 0;
        caf::put(s.fields, "apps", static_cast<uint64_t>(st.apps.size()));
        caf::put(s.fields, "up", up);
        caf::put(s.fields, "ports_held", static_cast<uint64_t>(st.ctx->ports->held()));
        caf::put(s.fields, "recovering", st.recovering);
        return s;
      },
  };
}

} // namespace troupe
