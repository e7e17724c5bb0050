#pragma once

// The map of the system: every typed actor interface and every message type
// that crosses an actor boundary. Read this first.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/make_message.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

namespace troupe {

/// The one error enum of troupe; rendered by `to_string(ec)` and registered
/// with the actor system under the category "troupe".
enum class ec : uint8_t {
  none = 0,
  unspecified,
  invalid_argument,
  not_found,
  store_failure,
  schema_too_new,
  unavailable,
  restart_intensity,
  shutting_down,
};

/// Renders an error code as a stable snake_case name.
const char* to_string(ec x);

/// Registers troupe's message types and error category with an actor system
/// config (the node's, a host program's, or a test's).
void add_troupe_types(caf::actor_system_config& cfg);

/// A typed event of the node (lifecycle, jobs, instances, scaling …). It is
/// persisted by the store before any subscriber sees it.
struct event {
  /// Position in the persisted event log; assigned by the store.
  uint64_t seq = 0;
  /// Wall-clock time of the event, nanoseconds since the Unix epoch.
  int64_t ts_ns = 0;
  /// Dotted type, e.g. `node.started`, `actor.restarted`.
  std::string type;
  /// Name of the node that raised it.
  std::string node;
  /// Event payload as a JSON object (serialized).
  std::string data;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event& x) {
  return f(caf::meta::type_name("event"), x.seq, x.ts_ns, x.type, x.node, x.data);
}

/// One write of a group-committed batch.
struct write_op {
  enum kind_t : uint8_t {
    /// Stores `value` under `key`.
    put,
    /// Removes `key`; absent keys are not an error.
    erase,
    /// Stores `value` under the next sequence key of `table` (big-endian u64).
    append,
  };
  uint8_t kind = put;
  std::string table;
  std::string key;
  std::string value;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, write_op& x) {
  return f(caf::meta::type_name("write_op"), x.kind, x.table, x.key, x.value);
}

using write_batch = std::vector<write_op>;

/// What a committed batch produced: the sequence numbers given to its
/// `append` ops, in op order.
struct write_result {
  std::vector<uint64_t> appended;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, write_result& x) {
  return f(caf::meta::type_name("write_result"), x.appended);
}

} // namespace troupe

CAF_BEGIN_TYPE_ID_BLOCK(troupe, caf::first_custom_type_id)

  CAF_ADD_TYPE_ID(troupe, (troupe::event))
  CAF_ADD_TYPE_ID(troupe, (troupe::write_op))
  CAF_ADD_TYPE_ID(troupe, (troupe::write_batch))
  CAF_ADD_TYPE_ID(troupe, (troupe::write_result))

  // CAF already defines get, put, flush, ping, publish, subscribe, ok …
  CAF_ADD_ATOM(troupe, troupe, write_atom, "write")
  CAF_ADD_ATOM(troupe, troupe, unsub_atom, "unsub")
  CAF_ADD_ATOM(troupe, troupe, status_atom, "status")
  CAF_ADD_ATOM(troupe, troupe, shutdown_atom, "shutdown")
  CAF_ADD_ATOM(troupe, troupe, commit_atom, "commit")
  CAF_ADD_ATOM(troupe, troupe, restart_atom, "restart")

CAF_END_TYPE_ID_BLOCK(troupe)

CAF_ERROR_CODE_ENUM(troupe::ec, "troupe")

namespace troupe {

using caf::flush_atom;
using caf::get_atom;
using caf::ok_atom;
using caf::publish_atom;
using caf::subscribe_atom;

// -- store ---------------------------------------------------------------------

/// Single LMDB writer. Readers use read-only transactions on the shared
/// environment directly and never go through this actor.
using store_actor = caf::typed_actor<
  // Queues a batch for the next group commit; replies once it is committed.
  caf::replies_to<write_atom, write_batch>::with<write_result>,
  // Answers once every write queued before it is committed (readiness probe).
  caf::replies_to<flush_atom>::with<ok_atom>,
  // Internal: commits the queued writes in one transaction (sent to itself).
  caf::reacts_to<commit_atom>>;

// -- event bus -----------------------------------------------------------------

/// Receives events from the bus.
using event_subscriber_actor = caf::typed_actor<
  // Delivers one committed event.
  caf::reacts_to<event>>;

/// Pub/sub of node events; persists through the store before delivering.
using event_bus_actor = caf::typed_actor<
  // Persists the event, delivers it to every subscriber; replies with its seq.
  caf::replies_to<publish_atom, event>::with<uint64_t>,
  // Adds a subscriber; it is dropped automatically when it terminates.
  caf::reacts_to<subscribe_atom, event_subscriber_actor>,
  // Removes a subscriber.
  caf::reacts_to<unsub_atom, event_subscriber_actor>,
  // Answers once every publish accepted before it is delivered or failed.
  caf::replies_to<flush_atom>::with<ok_atom>>;

// -- node supervisor -------------------------------------------------------------

/// Starts the node's long-lived children, restarts crashed ones with backoff,
/// and escalates (quits with ec::restart_intensity) when they crash too often.
using node_supervisor_actor = caf::typed_actor<
  // Reports children and restart counts as a JSON object.
  caf::replies_to<status_atom>::with<std::string>,
  // Stops the children in reverse start order, then quits normally.
  caf::replies_to<shutdown_atom>::with<ok_atom>,
  // Internal: starts child number N again once its backoff has passed.
  caf::reacts_to<restart_atom, uint64_t>>;

// -- HTTP bridge -----------------------------------------------------------------

struct bridge_task;

/// One per io thread; turns HTTP requests into typed requests to actors.
using http_bridge_actor = caf::typed_actor<
  // Runs the task; the task answers its HTTP exchange itself.
  caf::reacts_to<bridge_task>>;

/// Work that an HTTP session hands to a bridge actor: it runs in the bridge's
/// context so it can issue typed requests and answer the exchange from their
/// continuations. Local only (holds a closure).
struct bridge_task {
  std::function<void(http_bridge_actor::pointer)> run;
};

} // namespace troupe

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::bridge_task)
