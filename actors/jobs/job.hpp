#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/typed_response_promise.hpp>

#include "actors/interfaces.hpp"
#include "actors/jobs/job_spec.hpp"
#include "persistence/jobs.hpp"
#include "runtime/ground/config.hpp"
#include "runtime/ground/launch.hpp"
#include "runtime/ground/process.hpp"

namespace troupe::metrics {
class gauge_board;
} // namespace troupe::metrics

namespace troupe {

/// One attempt's process as the job actor asks for it.
struct launch_request {
  process::spawn_options opts;
  /// Prepared (mode, owner) before the spawn: host::hand_over_workspace.
  std::string workspace;
  /// The working directory as a reason names it when it is missing.
  std::string cwd_shown;
  size_t max_line = 64 * 1024;
  /// Where the watch reports output and the exit.
  process::callbacks cb;
};

/// What came of a launch_request (runtime/ground/launch.hpp).
using launch_result = process::launched;

/// Starts a process off the caller's thread and calls `done` (on any thread)
/// with the outcome, before the watch reports anything.
using launcher_fn = std::function<void(launch_request, std::function<void(launch_result)> done)>;

/// What every job actor of a node shares.
struct job_env {
  std::shared_ptr<persistence::lmdb_env> env;
  std::shared_ptr<process::io> io;
  jobs_config cfg;
  std::string node_name;
  /// Log retention (logs.retention, logs.max_bytes capped at half the map),
  /// applied by the controller's sweep.
  std::chrono::milliseconds log_retention{7ll * 24 * 3'600'000};
  uint64_t log_max_bytes = 1ull << 30;
  /// metrics.relative_accuracy: the sketches of queue-wait and run-duration
  /// observations are made with it.
  double metrics_accuracy = 0.01;
  /// Where the controller keeps its gauges for the metrics registry to
  /// sample (null: no gauges).
  std::shared_ptr<metrics::gauge_board> gauges;
  /// What jobs inherit of troupe's environment (inherited_environment).
  std::vector<std::string> base_env;
  /// Starts the process of an attempt; empty: on io's blocking thread.
  /// (Tests script it to drive the job actor deterministically.)
  launcher_fn launcher;
  /// The controller's janitor (/proc scans, workspace removal) runs
  /// detached; false runs it scheduled, so tests stay deterministic.
  bool detach_janitor = true;
  /// Starts the actor of one attempt; empty: the real `job` actor. (Tests
  /// put a scripted stand-in here to drive the controller deterministically.)
  std::function<job_actor(caf::actor_system&, const std::string& id, job_controller_actor,
                          std::vector<job_subscriber_actor>)>
      launch;
};

struct job_state {
  static inline const char* name = "job";

  /// How an attempt was stopped from outside, if it was.
  enum class stop_kind { none, cancelled, timed_out, interrupted };

  std::shared_ptr<const job_env> ctx;
  job_controller_actor controller;
  persistence::job_record rec;
  job_spec spec;
  /// Subscribers of the job's status changes (its lines reach them through
  /// the log router).
  std::vector<job_subscriber_actor> subscribers;
  std::shared_ptr<process::watch> watch;
  /// Next sequence number for an output line (continues across attempts).
  uint64_t next_seq = 1;
  /// Writes not yet committed (output batches and the process record).
  int pending_writes = 0;
  /// Output batches waiting for their commit, and streams whose reading
  /// waits for one of them.
  static constexpr int max_pipeline_batches = 4;
  int pipeline_in_flight = 0;
  std::vector<uint8_t> held_streams;
  bool out_eof = false;
  bool err_eof = false;
  bool exited = false;
  bool spawned = false;
  bool finishing = false;
  int32_t exit_code = -1;
  int32_t signal = 0;
  stop_kind stop = stop_kind::none;
  std::vector<caf::typed_response_promise<ok_atom>> shutdown_waiters;
  /// Steps waiting for a deferred_atom message.
  std::map<uint64_t, std::function<void()>> deferred;
  uint64_t next_deferred = 0;
};

/// Runs one attempt of the job `id` (already stored as queued): persists
/// `running`, spawns the process, persists every output line with its
/// sequence number, enforces timeout and cancel, and persists the outcome
/// before telling subscribers and the controller.
job_actor::behavior_type job(job_actor::stateful_pointer<job_state> self,
                             std::shared_ptr<const job_env> ctx, std::string id,
                             job_controller_actor controller,
                             std::vector<job_subscriber_actor> subscribers);

/// What jobs get of troupe's environment `environ` (NAME=VALUE): PATH, HOME,
/// LANG, LC_*, TZ, USER, SHELL and the names matching `patterns`
/// (jobs.inherit_env: comma-separated names or fnmatch globs). TROUPE_*
/// settings never, whatever matches them: they hold tokens and passwords.
std::vector<std::string> inherited_environment(const std::vector<std::string>& environ,
                                               const std::string& patterns);

/// The environment a job's process gets: ctx.base_env, then USER, HOME,
/// SHELL and LOGNAME of jobs.user, the spec's env, and TROUPE_JOB_ID,
/// TROUPE_JOB_ATTEMPT, TROUPE_NODE, TROUPE_REQUEST_ID.
std::vector<std::string> job_environment(const job_env& ctx, const persistence::job_record& rec,
                                         const job_spec& spec);

/// The real launcher: on `io`'s blocking thread it prepares the workspace
/// for `jobs` (host::hand_over_workspace), spawns and prepares the watch.
void launch_process(process::io& io, std::optional<job_identity> jobs, launch_request req,
                    std::function<void(launch_result)> done);

/// Retry delay after attempt `attempt` failed.
std::chrono::milliseconds retry_backoff(const jobs_config& cfg, int attempt);

} // namespace troupe
