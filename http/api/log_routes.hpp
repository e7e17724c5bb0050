#pragma once

#include <memory>

#include "http/api/context.hpp"
#include "http/router.hpp"

namespace troupe {

/// GET /logs: stored lines by service, instance, job, level, request id, source
/// and time, as NDJSON pages, or followed as SSE with `follow=true`.
void add_log_routes(http::router& r, std::shared_ptr<node_context> ctx);

} // namespace troupe
