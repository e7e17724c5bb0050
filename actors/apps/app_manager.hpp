#pragma once

// The node's apps: registration with revisions, desired state (up/down,
// replicas) persisted before it is acted on, one app actor per app that is
// up, placement (this node), limits (apps.max_apps, apps.max_instances),
// and the restore after a restart: processes left by the previous run are
// killed (by TROUPE_INSTANCE in their environment) before any app starts.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/apps/app_env.hpp"
#include "persistence/apps.hpp"

namespace troupe {

struct app_manager_state {
  static inline const char* name = "app_manager";

  struct entry {
    persistence::app_record rec;
    int32_t min_replicas = 1;
    int32_t max_replicas = 1;
    app_actor actor;
  };

  std::shared_ptr<const apps_env> ctx;
  std::map<std::string, entry> apps;
  bool recovering = true;
  /// Every app actor spawned: they end with the manager (a functor attached
  /// to it holds this list, since the state is gone by then).
  std::shared_ptr<std::vector<app_actor>> spawned = std::make_shared<std::vector<app_actor>>();
  uint64_t orphans_killed = 0;
  /// Each autoscaled app's autoscaler and the spec it was started with.
  struct scaler {
    autoscaler_actor actor;
    std::string spec;
  };
  std::map<std::string, scaler> scalers;
  std::shared_ptr<std::vector<autoscaler_actor>> spawned_scalers =
      std::make_shared<std::vector<autoscaler_actor>>();
};

app_manager_actor::behavior_type
app_manager(app_manager_actor::stateful_pointer<app_manager_state> self,
            std::shared_ptr<const apps_env> ctx);

} // namespace troupe
