#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <caf/actor_clock.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "actors/jobs/job.hpp"
#include "actors/jobs/job_janitor.hpp"

namespace troupe {

struct job_controller_state {
  static inline const char* name = "job_controller";

  /// A queued job: higher priority first, then submission order.
  struct entry {
    int priority;
    uint64_t order;
    std::string id;
    /// Its labels as NAME=VALUE (counted in queued_labels).
    std::vector<std::string> labels;
    bool operator<(const entry& other) const {
      if (priority != other.priority)
        return priority > other.priority;
      return order < other.order;
    }
  };

  std::shared_ptr<const job_env> ctx;
  std::set<entry> queue;
  /// Queued jobs by id (to find and cancel them).
  std::map<std::string, entry> queued_index;
  /// Queued jobs per label NAME=VALUE (an autoscaler's queue.jobs).
  std::map<std::string, uint64_t> queued_labels;
  /// Jobs waiting for their retry backoff.
  std::set<std::string> backing_off;
  std::map<std::string, job_actor> running;
  /// Jobs whose end (cancel while queued, actor crash) is being committed:
  /// subscribers arriving meanwhile still get the final update.
  std::set<std::string> ending;
  /// Live subscribers of queued and running jobs.
  std::map<std::string, std::vector<job_subscriber_actor>> subscribers;
  /// DELETE requests waiting for a running job to end.
  std::map<std::string, std::vector<caf::typed_response_promise<std::string>>> cancels;
  /// Job counts by state.
  std::map<std::string, uint64_t> counts;
  /// Runs the blocking chores (/proc scans, workspace removal).
  job_janitor_actor janitor;
  /// A retention sweep is going through the jobs, one bounded step (one
  /// store transaction) after the other; what it did so far.
  bool sweeping = false;
  uint64_t swept_workspaces = 0;
  uint64_t swept_jobs = 0;
  /// A log trim is being committed.
  bool trimming = false;
  bool trimming_events = false;
  /// Lines removed by the log retention since start.
  uint64_t log_lines_trimmed = 0;
  /// Actor clock (steady): for queue-wait and run-time observations.
  std::map<std::string, caf::actor_clock::time_point> queued_since;
  std::map<std::string, caf::actor_clock::time_point> started_since;
  uint64_t next_order = 0;
  int slots = 1;
  /// True until the recovery writes committed: no job starts before.
  bool recovering = true;
  bool shutting_down = false;
  std::vector<caf::typed_response_promise<ok_atom>> shutdown_waiters;
};

/// Owns the job queue of this node. On start it reconciles what a previous
/// process left: `running` jobs lose their orphaned processes and are
/// re-queued (retries left) or marked `lost`; queued jobs run again. Its
/// parts: job_queue (admission), job_recovery, job_retention (sweeps and
/// trims), job_gauges, job_janitor (process killing, tree removal).
job_controller_actor::behavior_type
job_controller(job_controller_actor::stateful_pointer<job_controller_state> self,
               std::shared_ptr<const job_env> ctx);

/// Bounds of one step of the retention sweep: one store transaction each,
/// and the controller handles other messages between steps.
inline constexpr size_t sweep_records_per_step = 1000;
inline constexpr size_t sweep_workspaces_per_step = 100;
inline constexpr uint64_t sweep_lines_per_step = 200'000;

} // namespace troupe
