#pragma once

#include <memory>
#include <vector>

#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "persistence/lmdb_env.hpp"

namespace troupe {

struct store_state {
  static inline const char* name = "store";

  struct pending_write {
    write_batch ops;
    caf::typed_response_promise<write_result> promise;
  };

  std::shared_ptr<persistence::lmdb_env> env;
  /// Writes received since the last commit; committed together.
  std::vector<pending_write> queue;
  /// `flush` requests waiting for the next commit.
  std::vector<caf::typed_response_promise<ok_atom>> flush_waiters;
  /// True while a commit message to ourselves is in the mailbox.
  bool commit_scheduled = false;
  /// LMDB transactions committed (group commits), for tests and metrics.
  uint64_t commits = 0;
  /// Write batches acknowledged.
  uint64_t batches = 0;
};

/// The single LMDB writer. Writes queue until the commit message it sends
/// itself comes up: everything that arrived in between commits in one
/// transaction, and every writer is answered only after that commit.
store_actor::behavior_type store(store_actor::stateful_pointer<store_state> self,
                                 std::shared_ptr<persistence::lmdb_env> env);

} // namespace troupe
