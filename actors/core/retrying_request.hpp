#pragma once

// One request to a registered actor that outlives a restart of that actor
// under the node supervisor: the writes whose payload is the only copy (a
// job's output lines, its records) wait for the store or the log router to
// come back instead of being lost; others fail at once. Used for every store
// write of the jobs wing.

#include <chrono>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include <caf/error.hpp>
#include <caf/timespan.hpp>

#include "actors/core/names.hpp"
#include "actors/interfaces.hpp"

namespace troupe {

/// How often and how far apart a request whose target is away is retried.
struct retry_policy {
  /// Attempts after the first (0: the first failure is final).
  int retries = 0;
  /// Wait before each retry.
  std::chrono::milliseconds delay{100};
  /// Of each attempt's request.
  caf::timespan timeout = std::chrono::seconds(30);
};

/// A request whose failure is reported at once (the caller decides).
inline constexpr retry_policy no_retry{0, std::chrono::milliseconds{0}, std::chrono::seconds(30)};

/// Writes that are the only copy of their data: they wait up to ~10 s for a
/// store or router restarting under its supervisor.
inline constexpr retry_policy while_restarting{100, std::chrono::milliseconds{100},
                                               std::chrono::seconds(30)};

/// Runs `fn` in the calling actor once `delay` has passed (how a retry waits
/// without blocking the actor: a message to itself).
using defer_fn = std::function<void(std::chrono::milliseconds delay, std::function<void()> fn)>;

namespace detail {

/// The reply type a reply handler takes (its one parameter, decayed).
template <class F> struct reply_of : reply_of<decltype(&F::operator())> {};
template <class C, class R, class A> struct reply_of<R (C::*)(A) const> {
  using type = std::decay_t<A>;
};
template <class C, class R, class A> struct reply_of<R (C::*)(A)> { using type = std::decay_t<A>; };

} // namespace detail

/// Sends a request to the actor registered under `target`: `send(self, hdl,
/// timeout)` makes it (and copies its payload, so a retry can send it again).
/// `on_reply(reply&)` takes the answer and returns an error to have it
/// retried (a reply that says it failed), or none. A target that is not
/// registered, an error reply or a refused answer is retried per `policy`
/// through `defer`; after the last attempt `give_up(error)` runs.
template <class Handle, class Self, class Send, class OnReply, class GiveUp>
void retrying_request(Self self, const actor_name<Handle>& target, const retry_policy& policy,
                      const defer_fn& defer, Send send, OnReply on_reply, GiveUp give_up,
                      int attempt = 0) {
  using reply_type = typename detail::reply_of<OnReply>::type;
  auto retry = [=](caf::error why) mutable {
    if (attempt >= policy.retries || !defer) {
      give_up(why);
      return;
    }
    defer(policy.delay, [=]() mutable {
      retrying_request(self, target, policy, defer, std::move(send), std::move(on_reply),
                       std::move(give_up), attempt + 1);
    });
  };
  auto hdl = lookup(self->system(), target);
  if (!hdl) {
    retry(caf::make_error(ec::unavailable, std::string{target.what} + " is not running"));
    return;
  }
  send(self, *hdl, policy.timeout)
      .then(
          [on_reply, retry](reply_type& x) mutable {
            if (auto err = on_reply(x))
              retry(std::move(err));
          },
          [retry](caf::error& err) mutable { retry(std::move(err)); });
}

/// Writes `batch` through the store with `retrying_request`; `then()` once
/// it is committed.
template <class Self, class Then, class GiveUp>
void write_to_store(Self self, const retry_policy& policy, const defer_fn& defer, write_batch batch,
                    Then then, GiveUp give_up) {
  auto payload = std::make_shared<const write_batch>(std::move(batch));
  retrying_request(
      self, names::store, policy, defer,
      [payload](auto* sender, const store_actor& store, caf::timespan timeout) {
        return sender->request(store, timeout, write_atom::value, *payload);
      },
      [then](write_result&) mutable {
        then();
        return caf::error{};
      },
      std::move(give_up));
}

} // namespace troupe
