#pragma once

#include <memory>
#include <optional>
#include <string>

#include "http/api/context.hpp"
#include "http/router.hpp"

namespace troupe {

/// GET /logs: stored lines by service, instance, job, level, request id, source
/// and time, as NDJSON pages, or followed as SSE with `follow=true`.
void add_log_routes(http::router& r, std::shared_ptr<node_context> ctx);

/// Answers a GET /logs request (its parameters, `follow=true` as SSE);
/// `service` set overrides the parameter (GET /apps/{name}/logs).
void serve_logs(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex,
                const std::optional<std::string>& service = std::nullopt);

} // namespace troupe
