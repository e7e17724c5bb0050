#pragma once

#include <deque>
#include <functional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_clock.hpp>

#include "actors/core/names.hpp"
#include "actors/interfaces.hpp"
#include "runtime/ground/config.hpp"

namespace troupe {

/// How to (re)start one child of the node supervisor.
struct child_spec {
  /// Name in logs, events and the actor registry (an atom: <= 10 chars).
  std::string name;
  /// Spawns a fresh incarnation.
  std::function<caf::actor(caf::actor_system&)> start;
};

/// The child registered under `name`: `start` must return the handle type
/// the name is declared with, so what lookups find is checked at compile time.
template <class Handle, class Start>
child_spec make_child(const actor_name<Handle>& name, Start start) {
  return {name.text(), [start = std::move(start)](caf::actor_system& sys) {
            Handle hdl = start(sys);
            return caf::actor_cast<caf::actor>(hdl);
          }};
}

struct node_supervisor_state {
  static inline const char* name = "node_supervisor";

  struct child {
    child_spec spec;
    caf::actor handle;
    /// Restarts since the node started.
    uint64_t restarts = 0;
    /// Restart times within the current intensity window (for backoff).
    std::deque<caf::actor_clock::time_point> recent;
    /// Why the last incarnation ended, and how long its restart waited.
    std::string last_reason;
    std::chrono::milliseconds last_backoff{0};
  };

  supervisor_config cfg;
  std::vector<child> children;
  /// Restart times of all children within the intensity window.
  std::deque<caf::actor_clock::time_point> restarts;
  bool shutting_down = false;
};

/// Starts `specs` in order, registers each under its name, restarts crashed
/// children after an exponential backoff and quits with
/// `ec::restart_intensity` when more than `cfg.max_restarts` restarts happen
/// within `cfg.restart_window` (OTP's intensity/period).
node_supervisor_actor::behavior_type
node_supervisor(node_supervisor_actor::stateful_pointer<node_supervisor_state> self,
                supervisor_config cfg, std::vector<child_spec> specs);

} // namespace troupe
