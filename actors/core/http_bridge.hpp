#pragma once

#include "actors/interfaces.hpp"

namespace troupe {

/// Runs bridge tasks: the HTTP side's door into the actor world. Stateless;
/// one per io thread spreads the load.
http_bridge_actor::behavior_type http_bridge(http_bridge_actor::pointer self);

} // namespace troupe
