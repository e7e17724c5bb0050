#pragma once

// One app on this node: reconciles its instances toward the target count
// and revision (actors/apps/reconcile.hpp), asks where new instances go
// (placement: the app manager answers this node until a cluster leader
// does), restarts crashed instance actors under the same id (their
// successor kills what the crashed one left, so never two processes).

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/typed_response_promise.hpp>

#include "actors/apps/app_env.hpp"
#include "actors/apps/app_spec.hpp"
#include "actors/apps/usage_windows.hpp"

namespace troupe {

struct app_state_data {
  static inline const char* name = "app";

  struct member {
    instance_actor handle;
    uint32_t revision = 0;
    std::string state = "starting";
    bool ready = false;
    bool leaving = false;
    /// Where it listens (what the proxy sends requests to).
    uint16_t port = 0;
    /// Start order (newer instances leave first on scale-in).
    int64_t order = 0;
  };

  std::shared_ptr<const apps_env> ctx;
  app_target target;
  std::map<std::string, member> instances;
  /// Starts asked for but not placed yet (count as starting instances).
  uint32_t placing = 0;
  int64_t next_order = 0;
  bool stopping = false;
  std::vector<caf::typed_response_promise<ok_atom>> stop_waiters;
  /// Each instance's latest CPU and RSS (from its samples); the sum over
  /// them goes into these windows every apps.sample_interval.
  std::map<std::string, instance_usage> usage;
  apps::usage_windows windows;
  /// Stopped instances' records kept (newest first), pruned past a bound.
  std::vector<std::string> history;
  /// The target spec's expose rule, and what the proxy was told last (it
  /// is told again only on a change).
  std::optional<expose_rule> expose;
  /// Scale from zero (minReplicas 0, mode auto): how long and how many
  /// requests the proxy holds while no instance is ready (0: none).
  uint32_t activation_timeout_ms = 0;
  uint32_t activation_max_pending = 0;
  std::optional<app_endpoints> told;
};

/// Stopped instance records an app keeps (its instance history); older
/// ones are erased.
inline constexpr size_t instance_history_kept = 20;

/// Reconciles the app `target.name`; targets follow as messages.
app_actor::behavior_type app(app_actor::stateful_pointer<app_state_data> self,
                             std::shared_ptr<const apps_env> ctx, app_target target);

/// A fresh instance id: <app>-<6 hex digits>.
std::string new_instance_id(const std::string& app);

} // namespace troupe
