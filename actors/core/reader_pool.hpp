#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/interfaces.hpp"

namespace troupe {

/// Runs the store reads of HTTP requests that may take long (GET /logs pages
/// look at up to 100,000 lines, GET /jobs pages at up to 10,000 records) on a
/// few detached bridge actors: never on an io thread, never on a CAF scheduler
/// thread that other actors wait for. One bounded queue for all of them: past
/// it, a request is refused (the caller answers 503 `busy`) instead of
/// queueing without end. Thread-safe.
class reader_pool {
public:
  /// `workers` actors; at most `max_queued` tasks waiting or running at once.
  /// `detached` false spawns them as scheduled actors (deterministic tests).
  reader_pool(caf::actor_system& sys, size_t workers, size_t max_queued, bool detached = true);
  ~reader_pool();
  reader_pool(const reader_pool&) = delete;
  reader_pool& operator=(const reader_pool&) = delete;

  /// Queues `task` on the least busy worker; false (and `task` is dropped)
  /// when `max_queued` tasks are already waiting or running. `request_id`
  /// is bound to the worker's thread while the task runs.
  bool submit(std::function<void()> task, std::string request_id = {});

  /// Tasks waiting or running now.
  size_t pending() const;
  size_t capacity() const { return max_queued_; }

  /// Stops the workers and lets go of them (a detached actor's thread ends
  /// only once nobody holds the actor); tasks still queued are dropped (their
  /// exchanges answer 500 when released) and later submits fail.
  void stop();

private:
  struct worker {
    http_bridge_actor hdl;
    std::shared_ptr<std::atomic<size_t>> load;
  };
  std::mutex mtx_;
  std::vector<worker> workers_;
  std::shared_ptr<std::atomic<size_t>> pending_;
  size_t max_queued_;
};

} // namespace troupe
