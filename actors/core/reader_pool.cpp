#include "actors/core/reader_pool.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/core/http_bridge.hpp"

namespace troupe {

namespace {

/// Gives a task's place in the queue back when the task is done, or when it
/// is dropped unrun (its worker is gone): the count can never leak.
struct queue_slot {
  std::shared_ptr<std::atomic<size_t>> pending;
  std::shared_ptr<std::atomic<size_t>> load;
  ~queue_slot() {
    --*load;
    --*pending;
  }
};

} // namespace

reader_pool::reader_pool(caf::actor_system& sys, size_t workers, size_t max_queued, bool detached)
    : pending_(std::make_shared<std::atomic<size_t>>(0)), max_queued_(max_queued) {
  for (size_t i = 0; i < std::max<size_t>(1, workers); ++i) {
    // The bridge's behavior is what a reader needs: run a closure, keep the
    // request id on the thread, survive a failing task.
    auto hdl = detached ? sys.spawn<caf::detached>(http_bridge) : sys.spawn(http_bridge);
    workers_.push_back({hdl, std::make_shared<std::atomic<size_t>>(0)});
  }
}

reader_pool::~reader_pool() {
  stop();
}

bool reader_pool::submit(std::function<void()> task, std::string request_id) {
  std::unique_lock<std::mutex> guard{mtx_};
  if (workers_.empty())
    return false; // stopped
  if (pending_->fetch_add(1) >= max_queued_) {
    --*pending_;
    return false;
  }
  auto* best = &workers_.front();
  for (auto& w : workers_)
    if (w.load->load() < best->load->load())
      best = &w;
  ++*best->load;
  auto hdl = best->hdl;
  std::shared_ptr<queue_slot> slot{new queue_slot{pending_, best->load}};
  guard.unlock();
  caf::anon_send(hdl,
                 bridge_task{[task = std::move(task), slot](http_bridge_actor::pointer) mutable {
                               auto done = std::move(slot);
                               task();
                             },
                             std::move(request_id)});
  return true;
}

size_t reader_pool::pending() const {
  return pending_->load();
}

void reader_pool::stop() {
  std::vector<worker> gone;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    gone.swap(workers_);
  }
  for (auto& w : gone)
    caf::anon_send_exit(w.hdl, caf::exit_reason::user_shutdown);
}

} // namespace troupe
