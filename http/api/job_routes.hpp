#pragma once

#include <memory>

#include "http/api/core_routes.hpp"
#include "http/router.hpp"

namespace troupe {

/// POST /jobs, /submit, /submit-stream, /submit-async; GET /jobs,
/// /jobs/{id}, /jobs/{id}/stream, /jobs/{id}/logs; DELETE /jobs/{id}.
void add_job_routes(http::router& r, std::shared_ptr<node_context> ctx);

} // namespace troupe
