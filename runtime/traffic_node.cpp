#include "runtime/traffic_node.hpp"

#include <charconv>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>

#include "actors/core/names.hpp"
#include "actors/metrics/metrics_model.hpp"

namespace troupe {

std::shared_ptr<http::proxy_server>
start_proxy(const config& cfg, std::shared_ptr<metrics::recorder> recorder, system_slot sys) {
  auto& p = cfg.proxy;
  if (!p.enabled() || p.mode != "builtin")
    return nullptr;
  http::proxy_options o;
  auto colon = p.listen.rfind(':');
  o.host = p.listen.substr(0, colon);
  if (o.host.size() >= 2 && o.host.front() == '[' && o.host.back() == ']')
    o.host = o.host.substr(1, o.host.size() - 2);
  o.port = static_cast<uint16_t>(std::stoul(p.listen.substr(colon + 1)));
  o.io_threads = p.io_threads;
  o.upstream_timeout = p.upstream_timeout;
  o.connect_timeout = p.connect_timeout;
  o.client_idle_timeout = p.client_idle_timeout;
  o.header_timeout = p.header_timeout;
  o.upstream_idle_timeout = p.upstream_idle_timeout;
  o.balancing.max_fails = static_cast<uint32_t>(p.max_fails);
  o.balancing.eject_for = std::chrono::seconds(p.eject_seconds);
  o.max_connections = static_cast<size_t>(p.max_connections);
  o.max_header_bytes = static_cast<size_t>(p.max_header_bytes);
  o.upstream_keepalive = static_cast<size_t>(p.upstream_keepalive);
  o.via = p.via;
  // Every request: one short lock on the io thread, drained by the
  // registry's tick (as troupe's own server does).
  o.on_request = [recorder, requests = metrics::find_family("apps.requests"),
                  duration =
                      metrics::find_family("apps.request.duration")](const http::proxy_record& r) {
    thread_local std::vector<std::string> by_status(2);
    thread_local std::vector<std::string> by_app(1);
    by_status[0].assign(r.app);
    char digits[8];
    auto end = std::to_chars(digits, digits + sizeof(digits), r.status).ptr;
    by_status[1].assign(digits, end);
    by_app[0].assign(r.app);
    recorder->add(*requests, by_status);
    recorder->observe(*duration, by_app, r.seconds);
  };
  o.on_eject = [sys](const std::string& app, const std::string& instance) {
    auto* s = sys->load();
    if (s == nullptr)
      return;
    if (auto traffic = lookup(*s, names::traffic))
      caf::anon_send(*traffic, ejected_atom::value, app, instance);
  };
  o.on_activate = [sys](const std::string& app) {
    auto* s = sys->load();
    if (s == nullptr)
      return;
    if (auto traffic = lookup(*s, names::traffic))
      caf::anon_send(*traffic, activate_atom::value, app);
  };
  auto proxy = std::make_shared<http::proxy_server>(std::move(o));
  proxy->start();
  return proxy;
}

} // namespace troupe
