#pragma once

#include <memory>

#include "http/api/core_routes.hpp"
#include "http/router.hpp"

namespace troupe {

/// GET /metrics (Prometheus text 0.0.4) and GET /monitoring/system (JSON).
void add_metrics_routes(http::router& r, std::shared_ptr<node_context> ctx);

} // namespace troupe
