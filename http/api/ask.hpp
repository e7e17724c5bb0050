#pragma once

// The one way a route asks an actor: the request runs on an http_bridge actor,
// a callee that is not running or a failed request becomes the mapped error
// (http/api/api_error.hpp), and the route's continuation answers the exchange.

#include <chrono>
#include <functional>
#include <string>
#include <tuple>
#include <utility>

#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/core/names.hpp"
#include "http/api/api_error.hpp"
#include "http/api/context.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

/// A registered actor the API asks, and how its failures read.
template <class Handle> struct callee {
  /// Its name in the registry (actors/core/names.hpp).
  actor_name<Handle> name;
  /// The message of the 503 `unavailable` while it is not registered (restarting).
  const char* not_running;
  /// Requests to it end after this.
  caf::timespan timeout;
  /// What a CAF error means for the routes that ask it.
  system_errors system = system_errors::internal;
};

/// What a route does when its request fails; by default it answers the error.
using failure_handler = std::function<void(const api_error&)>;

namespace detail {

template <class Handle, class... Ts, class OnValue>
void ask_from(http_bridge_actor::pointer self, const callee<Handle>& to, std::tuple<Ts...>& msg,
              OnValue& on_value, failure_handler& on_failure) {
  auto hdl = lookup(self->system(), to.name);
  if (!hdl) {
    on_failure(api_error{503, "unavailable", to.not_running});
    return;
  }
  auto send = [&](auto&... xs) { return self->request(*hdl, to.timeout, std::move(xs)...); };
  std::apply(send, msg).then(
      std::move(on_value),
      [on_failure, system = to.system, rid = logging::current_request_id()](caf::error& err) {
        logging::request_scope scope{rid};
        on_failure(to_api_error(err, system));
      });
}

} // namespace detail

/// Asks `to` with the message `msg` from one of the node's bridge actors and
/// calls `on_value` with the typed reply there; `on_value` answers `ex`. When `to`
/// is not running or the request fails, `on_failure` runs instead (default: answer
/// `ex` with the mapped error).
template <class Handle, class... Ts, class OnValue>
void ask(const node_context& ctx, const http::exchange_ptr& ex, const callee<Handle>& to,
         std::tuple<Ts...> msg, OnValue on_value, failure_handler on_failure = {}) {
  if (!on_failure)
    on_failure = [ex](const api_error& e) { ex->reply(to_response(e)); };
  auto task = [to, msg = std::move(msg), on_value = std::move(on_value),
               on_failure = std::move(on_failure)](http_bridge_actor::pointer self) mutable {
    detail::ask_from(self, to, msg, on_value, on_failure);
  };
  caf::anon_send(ctx.bridge(), bridge_task{std::move(task), ex->req().request_id});
}

} // namespace troupe
