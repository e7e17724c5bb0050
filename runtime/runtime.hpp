#pragma once

// The embeddable troupe node: a host program creates a runtime from a
// validated config, starts it, and either blocks in run_until_stopped() (as
// `troupe serve` does) or drives it from its own threads.

#include <memory>
#include <string>

#include <caf/fwd.hpp>

#include "runtime/ground/config.hpp"

namespace troupe {

namespace persistence {
class lmdb_env;
}

/// Exit code when the node stops because its supervisor gave up.
inline constexpr int exit_escalated = 70;

class runtime {
public:
  explicit runtime(config cfg);
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// Binds the listener, opens the store, starts the actors and serves.
  /// Throws std::runtime_error with a readable message on failure.
  void start();

  /// The bound HOST:PORT (valid after start()).
  const std::string& address() const;

  /// Re-reads auth.tokens_file and replaces the API tokens at once; a bad
  /// file keeps those in force (the error is logged). Thread-safe; false if
  /// nothing was replaced.
  bool reload_tokens();

  /// Asks the node to stop; the first caller's exit code wins. Thread-safe.
  void request_stop(int exit_code, std::string reason);

  /// Blocks until a stop is requested, shuts down gracefully and returns the
  /// exit code (0 for a requested stop).
  int run_until_stopped();

  /// True while the node serves and its dependencies answer.
  bool ready() const;

  caf::actor_system& system();
  const config& cfg() const;
  const std::shared_ptr<persistence::lmdb_env>& env() const;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

/// Blocks SIGINT/SIGTERM/SIGHUP (and ignores SIGPIPE) in the calling thread;
/// call it before any other thread exists so that every thread inherits the
/// mask.
void block_stop_signals();

/// Handles SIGINT/SIGTERM on a thread of its own: the first one asks `rt` to
/// stop gracefully, a second one exits at once. SIGHUP reloads the API
/// tokens (runtime::reload_tokens).
void handle_stop_signals(runtime& rt);

} // namespace troupe
