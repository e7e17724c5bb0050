#pragma once

#include <memory>

#include "http/api/context.hpp"
#include "http/router.hpp"

namespace troupe {

/// Health, readiness, version, events and (if enabled) fault injection.
void add_node_routes(http::router& r, std::shared_ptr<node_context> ctx);

} // namespace troupe
