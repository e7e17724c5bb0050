#pragma once

#include <memory>

#include "http/api/context.hpp"
#include "http/router.hpp"

namespace troupe {

/// POST /apps/register, /apps/{name}/up|down|scale|policy; DELETE
/// /apps/{name}; GET /apps, /apps/{name}/status, /apps/{name}/logs,
/// /apps/{name}/scaling. Reads need `read`, changes `submit` (like jobs: an
/// app runs commands as a job does).
void add_app_routes(http::router& r, std::shared_ptr<node_context> ctx);

} // namespace troupe
