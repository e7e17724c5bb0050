#include "http/api/metrics_routes.hpp"

#include <chrono>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/core/names.hpp"

namespace troupe {

namespace {

/// Asks the registry for a rendering and answers with it.
template <class Atom>
void render(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex, Atom what,
            std::string content_type) {
  caf::anon_send(
      ctx->bridge(),
      bridge_task{[ex, what, content_type](http_bridge_actor::pointer self) {
                    auto registry = lookup(self->system(), names::metrics);
                    if (!registry) {
                      ex->reply(http::response::error(
                          503, "unavailable", "the metrics registry is not running (restarting?)"));
                      return;
                    }
                    self->request(*registry, std::chrono::seconds(10), what)
                        .then(
                            [ex, content_type](std::string& body) {
                              http::response res;
                              res.status = 200;
                              res.content_type = content_type;
                              res.body = std::move(body);
                              ex->reply(std::move(res));
                            },
                            [ex](caf::error& err) {
                              ex->reply(
                                  http::response::error(503, "unavailable", caf::to_string(err)));
                            });
                  },
                  ex->req().request_id});
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
