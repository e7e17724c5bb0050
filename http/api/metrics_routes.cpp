#include "http/api/metrics_routes.hpp"

#include <chrono>

#include "http/api/ask.hpp"

namespace troupe {

namespace {

/// The metrics registry: while it cannot answer, metrics are unavailable (503).
const callee<metrics_actor> registry{names::metrics,
                                     "the metrics registry is not running (restarting?)",
                                     std::chrono::seconds(10), system_errors::unavailable};

/// Asks the registry for a rendering and answers with it.
template <class Atom>
void render(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex, Atom what,
            std::string content_type) {
  ask(*ctx, ex, registry, std::make_tuple(what), [ex, content_type](std::string& body) {
    http::response res;
    res.status = 200;
    res.content_type = content_type;
    res.body = std::move(body);
    ex->reply(std::move(res));
  });
}

} // namespace

void add_metrics_routes(http::router& r, std::shared_ptr<node_context> ctx) {
  r.add("GET", "/metrics", {ctx->cfg->auth.public_metrics ? http::role::none : http::role::read},
        [ctx](const http::exchange_ptr& ex) {
          render(ctx, ex, prometheus_atom::value, "text/plain; version=0.0.4; charset=utf-8");
        });
  r.add("GET", "/monitoring/system", {http::role::read}, [ctx](const http::exchange_ptr& ex) {
    render(ctx, ex, monitoring_atom::value, "application/json");
  });
}

} // namespace troupe
