#pragma once

// What every actor of the apps wing on a node shares: storage, the process
// io thread, config, the port allocator, and the seams tests substitute
// (launching processes, signalling them, spawning instance actors).

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <nlohmann/json.hpp>

#include "actors/apps/backoff.hpp"
#include "actors/apps/limits.hpp"
#include "actors/apps/ports.hpp"
#include "actors/apps/probes.hpp"
#include "actors/autoscale/decide.hpp"
#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
#include "actors/interfaces.hpp"
#include "runtime/ground/config.hpp"
#include "runtime/ground/launch.hpp"
#include "runtime/ground/logging.hpp"
#include "runtime/ground/process.hpp"

namespace troupe::persistence {
class lmdb_env;
} // namespace troupe::persistence

namespace troupe {

/// The node's port allocator behind a lock (instance actors of every app
/// allocate and release on their own threads).
class shared_ports {
public:
  explicit shared_ports(port_allocator alloc) : alloc_(std::move(alloc)) {}
  /// Throws port_exhausted.
  std::vector<uint16_t> allocate(size_t n) {
    std::lock_guard<std::mutex> g{mtx_};
    return alloc_.allocate(n);
  }
  void release(const std::vector<uint16_t>& ports) {
    std::lock_guard<std::mutex> g{mtx_};
    alloc_.release(ports);
  }
  size_t held() {
    std::lock_guard<std::mutex> g{mtx_};
    return alloc_.held();
  }

private:
  std::mutex mtx_;
  port_allocator alloc_;
};

/// A process to start for an instance.
struct instance_launch {
  process::spawn_options opts;
  size_t max_line = 64 * 1024;
  /// Kill processes of this instance id left behind first (a restarted
  /// instance actor, or a process that outlived its actor): never two.
  std::string reap_instance;
  process::callbacks cb;
};

/// What came of an instance_launch (runtime/ground/launch.hpp): pid and
/// watch, or why it failed.
using instance_launched = process::launched;

using instance_launcher =
    std::function<void(instance_launch, std::function<void(instance_launched)> done)>;

/// Who spawns one instance actor: (system, app actor, app target, instance
/// id, restarted after a crash).
using instance_spawner = std::function<instance_actor(caf::actor_system&, const app_actor&,
                                                      const app_target&, const std::string&)>;

/// Who spawns an app's autoscaler (the autoscale wing, wired by the node):
/// (system, app, its scaling policy, its bounds).
using autoscaler_spawner = std::function<autoscaler_actor(
    caf::actor_system&, const std::string&, const app_scaling_policy&, const autoscale::bounds&)>;

struct apps_env {
  std::shared_ptr<persistence::lmdb_env> env;
  std::shared_ptr<process::io> io;
  apps_config cfg;
  std::string node_name;
  std::shared_ptr<shared_ports> ports;
  /// What instances inherit of troupe's environment (never TROUPE_*).
  std::vector<std::string> base_env;
  /// Where instances run (cwd) when the spec names no workingDir.
  std::string work_dir = "/";
  restart_backoff_policy backoff;
  /// Runs health probes; null: instances get no checkers (tests).
  std::shared_ptr<apps::prober> probes;
  /// Where instance limits go (detected once per node).
  apps::limit_host limits;
  /// Starts a process; empty: the real one on io's blocking thread.
  instance_launcher launcher;
  /// Signals a process group; empty: process::signal_group.
  std::function<bool(pid_t, int)> signal;
  /// Spawns an instance actor; empty: the real `instance`.
  instance_spawner spawn_instance;
  /// Spawns an app's autoscaler; empty: no autoscaling (policy stored only).
  autoscaler_spawner autoscaler;
  /// The /proc scan for orphans of the previous run runs on io's blocking
  /// thread; false skips it (deterministic tests).
  bool recover_orphans = true;
  /// Publishes events; false in tests without an event bus is harmless too.
  bool events = true;
};

/// Publishes an event (its state already persisted) on the node's event
/// bus without waiting; a bus that is away loses it with a warning.
template <class Self>
void publish_app_event(Self self, const apps_env& ctx, const std::string& type,
                       const nlohmann::json& data) {
  if (!ctx.events)
    return;
  auto bus = lookup(self->system(), names::event_bus);
  if (!bus) {
    logging::get("apps")->warn("{} not published: the event bus is not running", type);
    return;
  }
  self->request(*bus, std::chrono::seconds(30), publish_atom::value, make_event(type, data.dump()))
      .then([](uint64_t) {},
            [type](caf::error& err) {
              logging::get("apps")->warn("{} not published: {}", type, caf::to_string(err));
            });
}

} // namespace troupe
