#pragma once

// The node's traffic assembly (issue 13): the built-in proxy's data plane
// as configured (proxy.*), its request records into troupe's metrics
// recorder, its ejections to the traffic actor.

#include <atomic>
#include <memory>

#include <caf/fwd.hpp>

#include "http/proxy.hpp"
#include "runtime/ground/config.hpp"

namespace troupe {

namespace metrics {
class recorder;
}

/// Where the proxy's io threads find the actor system (null before it
/// exists and after it is gone).
using system_slot = std::shared_ptr<std::atomic<caf::actor_system*>>;

/// The built-in proxy (started: its shared listener bound), or nullptr when
/// proxy.listen is empty or proxy.mode is nginx. Throws std::runtime_error
/// when it cannot listen.
std::shared_ptr<http::proxy_server>
start_proxy(const config& cfg, std::shared_ptr<metrics::recorder> recorder, system_slot sys);

} // namespace troupe
