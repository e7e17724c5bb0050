#pragma once

// The node's registry: the name of each long-lived actor together with its
// interface, and the one way to look one up. The node supervisor updates the
// registry on every (re)start, so a lookup always yields the current
// incarnation.

#include <algorithm>
#include <optional>

#include <caf/abstract_actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/actor_cast.hpp>
#include <caf/actor_registry.hpp>
#include <caf/actor_system.hpp>
#include <caf/atom.hpp>

#include "actors/interfaces.hpp"

namespace troupe {

/// A registry name and the interface of the actor registered under it.
template <class Handle> struct actor_name {
  using handle_type = Handle;
  caf::atom_value key;
  /// What the actor is, for messages ("store", "log router").
  const char* what;
  /// The registry key as text (child specs).
  std::string text() const { return caf::to_string(key); }
};

namespace names {

inline constexpr actor_name<store_actor> store{caf::atom("store"), "store"};
inline constexpr actor_name<event_bus_actor> event_bus{caf::atom("event_bus"), "event bus"};
inline constexpr actor_name<job_controller_actor> jobs{caf::atom("jobs"), "job controller"};
inline constexpr actor_name<log_router_actor> logs{caf::atom("logs"), "log router"};
inline constexpr actor_name<log_batcher_actor> loki{caf::atom("loki"), "Loki sink"};
inline constexpr actor_name<metrics_actor> metrics{caf::atom("metrics"), "metrics registry"};
inline constexpr actor_name<metrics_exporter_actor> exporter{caf::atom("exporter"),
                                                             "metrics exporter"};
inline constexpr actor_name<app_manager_actor> apps{caf::atom("apps"), "app manager"};
/// Registered by the proxy (issue 13); absent until then.
inline constexpr actor_name<traffic_actor> traffic{caf::atom("traffic"), "proxy"};

} // namespace names

/// Whether `ptr` is an actor that speaks `Handle`'s interface.
template <class Handle> bool speaks(caf::actor_system& sys, const caf::strong_actor_ptr& ptr) {
  if (!ptr)
    return false;
  auto* actual = caf::actor_cast<caf::abstract_actor*>(ptr);
  // Fast path: spawned from a behaviour of exactly this interface.
  if (dynamic_cast<typename Handle::base*>(actual) != nullptr)
    return true;
  // Anything else (a wider interface, later a remote proxy) by its message types.
  return sys.assignable<Handle>(actual->message_types());
}

/// The actor registered under `name`, if there is one and it speaks the
/// interface the name is declared with.
template <class Handle>
std::optional<Handle> lookup(caf::actor_system& sys, const actor_name<Handle>& name) {
  auto ptr = sys.registry().get(name.key);
  if (!speaks<Handle>(sys, ptr))
    return std::nullopt;
  return caf::actor_cast<Handle>(std::move(ptr));
}

/// Registers `hdl` under `name`, replacing what was there (CAF's `put`
/// keeps an existing entry); the handle's type is the name's, so a lookup
/// finds what it expects.
template <class Handle>
void enroll(caf::actor_system& sys, const actor_name<Handle>& name, const Handle& hdl) {
  sys.registry().erase(name.key);
  sys.registry().put(name.key, caf::actor_cast<caf::strong_actor_ptr>(hdl));
}

/// Removes the entry of `name`.
template <class Handle> void withdraw(caf::actor_system& sys, const actor_name<Handle>& name) {
  sys.registry().erase(name.key);
}

/// Removes the handle of a terminated actor (from a down message) from a
/// list of subscribers.
template <class Handles> void drop_terminated(Handles& xs, const caf::actor_addr& who) {
  xs.erase(std::remove_if(xs.begin(), xs.end(), [&](const auto& x) { return x.address() == who; }),
           xs.end());
}

} // namespace troupe
