#pragma once

// The node's prober: HTTP GET and TCP connect probes on an io thread of its
// own (Asio, non-blocking, each bounded by its timeout), exec probes through
// the process code (runtime/ground/process.hpp). Results come back through a
// callback that health checkers turn into a message, so no actor thread ever
// waits on a probe.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/apps/health_policy.hpp"

namespace troupe::process {
class io;
} // namespace troupe::process

namespace troupe::apps {

/// One probe to run.
struct probe_request {
  /// kind, path, port, command and timeout are used here.
  probe_spec spec;
  /// http, tcp: an IP literal (no DNS lookups on the probe path).
  std::string host = "127.0.0.1";
  /// exec: the complete environment (NAME=VALUE) and working directory.
  std::vector<std::string> env;
  std::string cwd;
};

/// What a probe found: healthy, or unhealthy with a short reason such as
/// "HTTP 503", "timeout after 2s", "connection refused", "exit code 1".
struct probe_outcome {
  probe_verdict verdict = probe_verdict::unhealthy;
  std::string error;
};

/// Runs probes. Thread-safe.
class prober {
public:
  virtual ~prober() = default;
  /// Starts a probe; `done` is called exactly once (unless the prober is
  /// destroyed first), on the prober's thread: it must not block.
  virtual void probe(probe_request req, std::function<void(probe_outcome)> done) = 0;
};

struct prober_limits {
  /// Probes running at once; further ones wait in FIFO order.
  uint32_t max_concurrent = 64;
  /// Probes waiting at most; beyond that a probe is answered `skipped`
  /// (counted neither way) instead of queueing without bound.
  uint32_t max_waiting = 4096;
  /// Bytes of an HTTP response read at most: only the status line is
  /// needed, so a health endpoint that streams forever costs this much.
  uint64_t max_response_bytes = 8 * 1024;
};

/// The real prober with an io thread of its own. `io` runs exec probes (its
/// blocking thread spawns, its watch reaps: no zombies) and must outlive the
/// prober.
std::shared_ptr<prober> make_prober(process::io& io, prober_limits limits);

/// "2s" or "1500ms": how errors show a timeout.
std::string show_duration(std::chrono::milliseconds d);

} // namespace troupe::apps
