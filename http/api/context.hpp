#pragma once

// What every route module of the HTTP API shares: the node as handlers see it,
// and the one way a route runs a blocking store read.

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

class exporter_status;
class reader_pool;

/// What HTTP handlers may use of the node.
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

/// Runs `read` (a blocking store read) on the node's readers, off the io
/// thread, and answers `ex` with what it returns; a read that throws answers
/// 500 `store_failure`. Answers 503 `busy` with Retry-After when the readers'
/// queue is full.
void run_read(const node_context& ctx, const http::exchange_ptr& ex,
              std::function<http::response()> read);

} // namespace troupe
