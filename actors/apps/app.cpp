#include "actors/apps/app.hpp"

#include <random>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/apps/instance.hpp"
#include "actors/apps/reconcile.hpp"
#include "actors/core/names.hpp"
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

void maybe_stopped(self_ptr self) {
  auto& st = self->state;
  if (!st.stopping || !st.instances.empty())
    return;
  for (auto& rp : st.stop_waiters)
    rp.deliver(ok_atom::value);
  st.stop_waiters.clear();
  // Stopped for good (node shutdown, delete): the actor system waits for it.
  self->quit();
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
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    for (auto i = st.instances.begin(); i != st.instances.end(); ++i) {
      if (i->second.handle.address() != dm.source)
        continue;
      auto id = i->first;
      bool crashed = i->second.state != "stopped" && !st.stopping;
      st.instances.erase(i);
      if (crashed && dm.reason != caf::exit_reason::normal) {
        // Same id: its successor kills what is left of it before starting.
        log()->error("app {}: instance actor {} ended ({}); restarting it", st.target.name, id,
                     caf::to_string(dm.reason));
        spawn_member(self, id);
      }
      reconcile(self);
      maybe_stopped(self);
      return;
    }
  });
  reconcile(self);
  return {
      [self](app_target& t) {
        self->state.target = std::move(t);
        reconcile(self);
      },
      [self](instance_change& c) {
        auto& st = self->state;
        auto i = st.instances.find(c.id);
        if (i == st.instances.end())
          return;
        i->second.state = c.state;
        i->second.ready = c.ready;
        if (c.state == "stopped" || c.state == "draining" || c.state == "stopping")
          i->second.leaving = true;
        reconcile(self);
      },
      [self](tick_atom) { reconcile(self); },
      [self](get_atom) -> caf::result<app_status> {
        auto& st = self->state;
        struct gather {
          app_status out;
          size_t waiting = 0;
          caf::typed_response_promise<app_status> rp;
        };
        auto g = std::make_shared<gather>();
        g->out.name = st.target.name;
        g->out.state = st.target.up ? "up" : "down";
        g->out.desired = st.target.up ? st.target.replicas : 0;
        g->out.revision = st.target.revision;
        for (auto& [id, m] : st.instances)
          if (m.ready && !m.leaving)
            ++g->out.ready;
        if (st.instances.empty())
          return g->out;
        g->rp = self->make_response_promise<app_status>();
        g->waiting = st.instances.size();
        for (auto& [id, m] : st.instances) {
          auto done = [g] {
            if (--g->waiting == 0)
              g->rp.deliver(g->out);
          };
          self->request(m.handle, std::chrono::seconds(5), get_atom::value)
              .then(
                  [g, done](instance_status& x) {
                    g->out.instances.push_back(std::move(x));
                    done();
                  },
                  [done](caf::error&) { done(); });
        }
        return g->rp;
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
