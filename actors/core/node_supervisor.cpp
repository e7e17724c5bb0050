#include "actors/core/node_supervisor.hpp"

#include <algorithm>

#include <caf/actor_registry.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

using self_ptr = node_supervisor_actor::stateful_pointer<node_supervisor_state>;

void start_child(self_ptr self, size_t index) {
  auto& c = self->state.children[index];
  c.handle = c.spec.start(self->system());
  self->monitor(c.handle);
  self->system().registry().put(caf::atom_from_string(c.spec.name),
                                caf::actor_cast<caf::strong_actor_ptr>(c.handle));
}

void prune(std::deque<caf::actor_clock::time_point>& xs, caf::actor_clock::time_point now,
           caf::timespan window) {
  while (!xs.empty() && now - xs.front() > window)
    xs.pop_front();
}

void publish_restart(self_ptr self, const std::string& name, uint64_t restarts,
                     const std::string& reason, caf::timespan backoff) {
  auto bus = lookup(self->system(), names::event_bus);
  if (!bus)
    return;
  nlohmann::json data{
      {"actor", name},
      {"restarts", restarts},
      {"reason", reason},
      {"backoff_ms", std::chrono::duration_cast<std::chrono::milliseconds>(backoff).count()}};
  self->request(*bus, std::chrono::seconds(30), publish_atom::value,
                make_event("actor.restarted", data.dump()))
      .then([](uint64_t) {},
            [](caf::error& err) {
              logging::get("supervisor")
                  ->warn("actor.restarted event not published: {}", caf::to_string(err));
            });
}

void on_child_down(self_ptr self, caf::down_msg& dm) {
  auto& st = self->state;
  auto i = std::find_if(st.children.begin(), st.children.end(),
                        [&](const auto& c) { return c.handle.address() == dm.source; });
  if (i == st.children.end() || st.shutting_down)
    return;
  auto index = static_cast<size_t>(i - st.children.begin());
  auto& c = *i;
  auto reason = caf::to_string(dm.reason);
  c.handle = nullptr;
  self->system().registry().erase(caf::atom_from_string(c.spec.name));
  auto now = self->clock().now();
  auto window = caf::timespan{st.cfg.restart_window};
  prune(st.restarts, now, window);
  prune(c.recent, now, window);
  st.restarts.push_back(now);
  c.recent.push_back(now);
  auto log = logging::get("supervisor");
  if (st.restarts.size() > static_cast<size_t>(st.cfg.max_restarts)) {
    auto why = "restart intensity exceeded: " + std::to_string(st.restarts.size()) +
               " restarts within " + std::to_string(st.cfg.restart_window.count()) + " ms (max " +
               std::to_string(st.cfg.max_restarts) + "); last: " + c.spec.name +
               " terminated with " + reason;
    log->critical("{}; shutting the node down", why);
    st.shutting_down = true;
    for (auto& other : st.children)
      if (other.handle) {
        self->system().registry().erase(caf::atom_from_string(other.spec.name));
        self->send_exit(other.handle, caf::exit_reason::user_shutdown);
      }
    self->quit(caf::make_error(ec::restart_intensity, why));
    return;
  }
  // Backoff doubles with each recent restart of this child, up to the cap.
  auto backoff = st.cfg.backoff_initial;
  for (size_t n = 1; n < c.recent.size() && backoff < st.cfg.backoff_max; ++n)
    backoff *= 2;
  backoff = std::min(backoff, st.cfg.backoff_max);
  ++c.restarts;
  log->warn("{} terminated with {}; restarting in {} ms (restart {} of at most {} per {} ms)",
            c.spec.name, reason, backoff.count(), st.restarts.size(), st.cfg.max_restarts,
            st.cfg.restart_window.count());
  c.last_reason = reason;
  c.last_backoff = backoff;
  self->delayed_send(self, backoff, restart_atom::value, static_cast<uint64_t>(index));
}

/// Each child with its restarts; healthy while every child runs.
component_status status_of(const node_supervisor_state& st) {
  component_status x{node_supervisor_state::name, true, {}};
  caf::config_value::list children;
  for (auto& c : st.children) {
    caf::settings child;
    caf::put(child, "name", c.spec.name);
    caf::put(child, "running", static_cast<bool>(c.handle));
    caf::put(child, "restarts", c.restarts);
    children.emplace_back(std::move(child));
    x.healthy = x.healthy && static_cast<bool>(c.handle);
  }
  caf::put(x.fields, "children", std::move(children));
  return x;
}

} // namespace

node_supervisor_actor::behavior_type
node_supervisor(node_supervisor_actor::stateful_pointer<node_supervisor_state> self,
                supervisor_config cfg, std::vector<child_spec> specs) {
  auto& st = self->state;
  st.cfg = cfg;
  for (auto& spec : specs)
    st.children.push_back({std::move(spec), caf::actor{}, 0, {}, {}, {}});
  for (size_t i = 0; i < st.children.size(); ++i)
    start_child(self, i);
  self->set_down_handler([self](caf::down_msg& dm) { on_child_down(self, dm); });
  return {
      [self](status_atom) { return status_of(self->state); },
      [self](restart_atom, uint64_t index) {
        auto& st = self->state;
        if (st.shutting_down || index >= st.children.size() || st.children[index].handle)
          return;
        start_child(self, index);
        auto& c = st.children[index];
        logging::get("supervisor")->info("{} restarted (restart {})", c.spec.name, c.restarts);
        publish_restart(self, c.spec.name, c.restarts, c.last_reason, c.last_backoff);
      },
      [self](shutdown_atom) -> caf::result<ok_atom> {
        auto& st = self->state;
        st.shutting_down = true;
        auto rp = self->make_response_promise<ok_atom>();
        // Stop children one at a time, last started first; each is asked to
        // prepare (jobs stop, the store commits queued writes) before it exits.
        auto stop_next = std::make_shared<std::function<void()>>();
        *stop_next = [self, rp, stop_next]() mutable {
          auto& children = self->state.children;
          auto i = std::find_if(children.rbegin(), children.rend(),
                                [](const auto& c) { return static_cast<bool>(c.handle); });
          if (i == children.rend()) {
            rp.deliver(ok_atom::value);
            self->quit();
            *stop_next = nullptr;
            return;
          }
          auto child = i->handle;
          i->handle = nullptr;
          self->system().registry().erase(caf::atom_from_string(i->spec.name));
          self->request(child, std::chrono::seconds(30), shutdown_atom::value)
              .then(
                  [self, child, stop_next](ok_atom) {
                    self->send_exit(child, caf::exit_reason::user_shutdown);
                    (*stop_next)();
                  },
                  [self, child, stop_next](caf::error&) {
                    self->send_exit(child, caf::exit_reason::user_shutdown);
                    (*stop_next)();
                  });
        };
        (*stop_next)();
        return rp;
      },
  };
}

} // namespace troupe
