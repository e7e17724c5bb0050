#pragma once

// One replica of an app: starts its process (the jobs' process code: own
// process group, pipes read on the io thread, exit through a pidfd), sends
// its output into the log pipeline (service = app, instance = id,
// source = app), restarts it per restartPolicy with restart_backoff, and
// drains it on request. Every state change is written to the instance's
// record before it is announced (event bus, app actor).

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/typed_response_promise.hpp>

#include "actors/apps/app_env.hpp"
#include "actors/apps/app_spec.hpp"
#include "actors/apps/backoff.hpp"
#include "actors/apps/limits.hpp"
#include "actors/apps/proc_sample.hpp"
#include "actors/apps/usage_windows.hpp"
#include "persistence/apps.hpp"

namespace troupe {

struct instance_state {
  static inline const char* name = "instance";

  std::shared_ptr<const apps_env> ctx;
  app_actor app;
  app_spec spec;
  persistence::instance_record rec;
  restart_backoff backoff;
  std::shared_ptr<process::watch> watch;
  bool ready = false;
  /// The instance's health checkers (readiness, liveness) while it runs,
  /// and what they last said.
  std::vector<health_checker_actor> checkers;
  health_report health;
  apps::limit_group limits;
  apps::proc_sample last_sample;
  /// The latest usage (no windows) and its samples' windows (made at the
  /// first sample: CPU in percent of a core, RSS in bytes).
  instance_usage usage;
  apps::usage_windows windows;
  /// The cgroup's OOM kill count when the process started: a higher one at
  /// its exit means the kernel killed it for the memory limit.
  uint64_t oom_kills_at_start = 0;
  bool running = false;
  /// Drain/stop requested: an exit ends the instance instead of a restart.
  bool leaving = false;
  /// Why the next exit happens (a liveness failure), for its event.
  std::string kill_reason;
  /// Drain: when waiting for in-flight requests gives up.
  caf::actor_clock::time_point drain_deadline{};
  bool terminated = false;
  /// Numbers of the current grace and backoff timers (older ones are stale).
  uint64_t grace_seq = 0;
  uint64_t restart_seq = 0;
  /// Log batches waiting for their commit (credit for the pipes).
  static constexpr int max_pipeline_batches = 4;
  int pipeline_in_flight = 0;
  std::vector<uint8_t> held_streams;
  std::vector<caf::typed_response_promise<ok_atom>> stop_waiters;
  std::map<uint64_t, std::function<void()>> deferred;
  uint64_t next_deferred = 0;

  instance_status status() const;
};

/// Runs instance `id` of the app `target` for `app`: allocates its ports,
/// starts its process, keeps it running. `adopting`: a restarted actor (or
/// a restarted node) whose processes of the same id are killed first.
instance_actor::behavior_type instance(instance_actor::stateful_pointer<instance_state> self,
                                       std::shared_ptr<const apps_env> ctx, app_actor app,
                                       app_target target, std::string id);

/// The probe a health checker runs for `probe` of `spec` on an instance
/// with these ports, environment and working directory.
apps::probe_request probe_for(const app_spec& spec, const app_probe& probe,
                              const std::vector<uint16_t>& ports, std::vector<std::string> env,
                              std::string cwd);

/// Whether `policy` (Always, OnFailure, Never) restarts after this exit.
bool restarts_after(const std::string& policy, int32_t exit_code, int32_t signal);

/// The real launcher: on `io`'s blocking thread kills what is left of the
/// instance (reap_instance), spawns, prepares the watch.
void launch_instance(process::io& io, instance_launch req,
                     std::function<void(instance_launched)> done);

} // namespace troupe
