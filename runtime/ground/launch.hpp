#pragma once

// Starting a process off an actor's thread: the one way jobs and app
// instances launch. The spawn (fork/exec, and whatever must happen first)
// runs on the process io's blocking thread; the caller hears the outcome
// before the watch reports any output or exit.

#include <functional>
#include <memory>
#include <string>

#include <sys/types.h>

#include "runtime/ground/process.hpp"

namespace troupe::process {

/// What came of a launch: pid and watch (begun right after `done`
/// returned), or why the process did not start.
struct launched {
  pid_t pid = -1;
  std::shared_ptr<process::watch> watch;
  /// Empty: it started.
  std::string error;
  /// The exit code an attempt that did not start records.
  int exit_code = 127;
};

/// What to launch: the spawn, its output's line cap and callbacks, and a
/// step that runs first on the same thread (checks, clean-up); a `before`
/// that sets the outcome's error (and exit code) or throws refuses the
/// launch.
struct launch_request {
  spawn_options opts;
  size_t max_line = 64 * 1024;
  callbacks cb;
  std::function<void(launched&)> before;
};

/// On `io`'s blocking thread: runs `req.before`, spawns, prepares the watch,
/// calls `done` (on that thread), then begins the watch, so `done` always
/// comes before the watch's first callback. Holds no reference to `io`
/// beyond the task, which io's own thread runs.
void launch(io& io, launch_request req, std::function<void(launched)> done);

} // namespace troupe::process
