#pragma once

// Names under which the node's long-lived actors are registered. The node
// supervisor updates the registry on every (re)start, so a lookup always
// yields the current incarnation.

#include <algorithm>

#include <caf/actor_addr.hpp>
#include <caf/actor_cast.hpp>
#include <caf/actor_registry.hpp>
#include <caf/actor_system.hpp>
#include <caf/atom.hpp>

namespace troupe {

namespace names {

inline constexpr caf::atom_value store = caf::atom("store");
inline constexpr caf::atom_value event_bus = caf::atom("event_bus");
inline constexpr caf::atom_value jobs = caf::atom("jobs");
inline constexpr caf::atom_value logs = caf::atom("logs");
inline constexpr caf::atom_value loki = caf::atom("loki");
inline constexpr caf::atom_value metrics = caf::atom("metrics");
inline constexpr caf::atom_value exporter = caf::atom("exporter");

} // namespace names

/// Removes the handle of a terminated actor (from a down message) from a
/// list of subscribers.
template <class Handles> void drop_terminated(Handles& xs, const caf::actor_addr& who) {
  xs.erase(std::remove_if(xs.begin(), xs.end(), [&](const auto& x) { return x.address() == who; }),
           xs.end());
}

/// The actor currently registered under `name` (invalid handle if none).
template <class Handle> Handle lookup(caf::actor_system& sys, caf::atom_value name) {
  return caf::actor_cast<Handle>(sys.registry().get(name));
}

} // namespace troupe
