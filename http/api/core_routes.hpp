#pragma once

#include <functional>
#include <memory>

#include <caf/fwd.hpp>

#include "actors/interfaces.hpp"
#include "http/router.hpp"
#include "runtime/ground/config.hpp"

namespace troupe {

namespace persistence {
class lmdb_env;
}

/// What HTTP handlers may use of the node.
class exporter_status;
class reader_pool;

struct node_context {
  caf::actor_system* sys = nullptr;
  std::shared_ptr<persistence::lmdb_env> env;
  const config* cfg = nullptr;
  /// A bridge actor to run typed requests from (round robin).
  std::function<http_bridge_actor()> bridge;
  /// True once shutdown began.
  std::function<bool()> stopping;
  /// The metrics exporter's status, when one runs (read by /readyz).
  std::shared_ptr<exporter_status> exporter_board;
  /// Where long store reads run (GET /logs, GET /jobs pages).
  std::shared_ptr<reader_pool> readers;
};

/// Runs `read` (a blocking store read that answers `ex` itself) on the node's
/// readers, off the io thread; answers 503 `busy` with Retry-After when their
/// queue is full.
void run_read(const node_context& ctx, const http::exchange_ptr& ex, std::function<void()> read);

/// Health, readiness, version, events and (if enabled) fault injection.
void add_node_routes(http::router& r, std::shared_ptr<node_context> ctx);

} // namespace troupe
