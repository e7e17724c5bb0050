#include "http/api/app_routes.hpp"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "actors/apps/app_spec.hpp"
#include "actors/apps/scaling_view.hpp"
#include "http/api/ask.hpp"
#include "http/api/context.hpp"
#include "http/api/log_routes.hpp"
#include "http/api/query_params.hpp"
#include "persistence/apps.hpp"
#include "persistence/lmdb_env.hpp"

namespace troupe {

using nlohmann::json;

namespace {

const callee<app_manager_actor> manager{names::apps, "the app manager is not running",
                                        std::chrono::seconds(60)};
const callee<traffic_actor> proxy{names::traffic, "the proxy is off (proxy.listen) or restarting",
                                  std::chrono::seconds(5)};
const callee<metrics_actor> registry{names::metrics, "the metrics registry is not running",
                                     std::chrono::seconds(10)};

/// The manager's invalid_argument messages start with the field they name
/// ("replicas: …"): a 400 that names it.
failure_handler field_errors(const http::exchange_ptr& ex) {
  return [ex](const api_error& e) {
    if (e.status == 400) {
      // The rendered error carries the manager's message in its context:
      // error(2, 'troupe', ("replicas: …")).
      auto msg = e.message;
      auto open = msg.find("(\"");
      auto close = msg.rfind("\")");
      if (open != std::string::npos && close != std::string::npos && close > open)
        msg = msg.substr(open + 2, close - open - 2);
      auto colon = msg.find(':');
      auto field = colon == std::string::npos ? std::string{} : msg.substr(0, colon);
      ex->reply(http::response::error(400, "invalid_request", msg, field));
      return;
    }
    ex->reply(to_response(e));
  };
}

/// Parses the body (JSON or YAML by content type); replies 400 naming the
/// field and returns nullopt when it is no valid spec.
std::optional<app_spec> parse_body(const http::exchange_ptr& ex) {
  auto& req = ex->req();
  try {
    return parse_app_spec(req.body, req.header("content-type"));
  } catch (const spec_error& e) {
    ex->reply(http::response::error(400, "invalid_spec", e.what(), e.field()));
  } catch (const std::exception& e) {
    ex->reply(http::response::error(400, "invalid_spec", e.what(), "body"));
  }
  return std::nullopt;
}

json instance_json(const instance_status& x) {
  json health{{"status", x.health},
              {"consecutive_failures", x.consecutive_failures},
              {"last_check",
               x.last_check_ns == 0 ? json(nullptr) : json(x.last_check_ns / 1'000'000'000.0)},
              {"last_error", x.last_error.empty() ? json(nullptr) : json(x.last_error)}};
  return json{{"id", x.id},
              {"node", x.node},
              {"pid", x.pid == 0 ? json(nullptr) : json(x.pid)},
              {"port", x.ports.empty() ? json(nullptr) : json(x.ports[0])},
              {"ports", x.ports},
              {"revision", x.revision},
              {"state", x.state},
              {"ready", x.ready},
              {"restarts", x.restarts},
              {"started_at",
               x.started_at_ns == 0 ? json(nullptr) : json(x.started_at_ns / 1'000'000'000.0)},
              {"health", health},
              {"cpu_percent", x.cpu_percent},
              {"rss_bytes", x.rss_bytes},
              {"limits", x.limits},
              {"reason", x.reason.empty() ? json(nullptr) : json(x.reason)}};
}

json app_json(const app_status& s, bool with_instances) {
  json j{{"name", s.name},
         {"state", s.state},
         {"desired", s.desired},
         {"ready", s.ready},
         {"revision", s.revision}};
  if (with_instances) {
    auto xs = s.instances;
    std::sort(xs.begin(), xs.end(), [](auto& a, auto& b) { return a.id < b.id; });
    j["instances"] = json::array();
    for (auto& x : xs)
      j["instances"].push_back(instance_json(x));
  }
  return j;
}

std::string name_of(const http::exchange_ptr& ex) {
  return ex->req().params.at("name");
}

void register_app(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto spec = parse_body(ex);
  if (!spec)
    return;
  auto name = spec->name;
  ask(
      *ctx, ex, manager, std::make_tuple(register_atom::value, to_json(*spec)),
      [ex, name](uint32_t revision) {
        ex->reply(http::response::json(revision == 1 ? 201 : 200,
                                       json{{"name", name}, {"revision", revision}}.dump()));
      },
      field_errors(ex));
}

template <class Atom>
void change_state(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex,
                  const char* state) {
  auto name = name_of(ex);
  ask(
      *ctx, ex, manager, std::make_tuple(Atom::value, name),
      [ex, name, state](ok_atom) {
        ex->reply(http::response::json(202, json{{"name", name}, {"state", state}}.dump()));
      },
      field_errors(ex));
}

void scale(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto name = name_of(ex);
  json body;
  try {
    body = json::parse(ex->req().body);
  } catch (const std::exception&) {
    ex->reply(http::response::error(400, "invalid_request", "the body is no JSON object", "body"));
    return;
  }
  if (!body.is_object() || !body.contains("replicas") || !body["replicas"].is_number_integer() ||
      body.size() != 1) {
    ex->reply(http::response::error(400, "invalid_request",
                                    "replicas: expected {\"replicas\": N} with an integer N",
                                    "replicas"));
    return;
  }
  auto n = body["replicas"].get<int64_t>();
  if (n < 0 || n > INT32_MAX) {
    ex->reply(http::response::error(400, "invalid_request",
                                    "replicas: must be 0 or more, got " + std::to_string(n),
                                    "replicas"));
    return;
  }
  ask(
      *ctx, ex, manager,
      std::make_tuple(scale_atom::value, name, static_cast<int32_t>(n), std::string{"api"}),
      [ex, name, n](ok_atom) {
        ex->reply(http::response::json(202, json{{"name", name}, {"replicas", n}}.dump()));
      },
      field_errors(ex));
}

/// The body is `scaling.policy` alone; it is validated inside the stored spec.
void policy(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto name = name_of(ex);
  auto rec = persistence::get_app(*ctx->env, name);
  if (!rec) {
    ex->reply(http::response::error(404, "not_found", "no app " + name, "name"));
    return;
  }
  json doc = json::parse(rec->spec);
  json policy;
  try {
    policy = json::parse(ex->req().body);
  } catch (const std::exception&) {
    ex->reply(http::response::error(400, "invalid_spec", "the body is no JSON object", "body"));
    return;
  }
  doc["spec"]["scaling"]["policy"] = policy;
  std::string spec_json;
  try {
    spec_json = to_json(parse_app_spec_json(doc.dump()));
  } catch (const spec_error& e) {
    auto field = e.field();
    // Name the field as the body has it (the policy's own path).
    const std::string prefix = "spec.scaling.policy";
    if (field.rfind(prefix, 0) == 0)
      field = field.size() > prefix.size() ? field.substr(prefix.size() + 1) : "body";
    ex->reply(http::response::error(400, "invalid_spec", e.what(), field));
    return;
  }
  ask(
      *ctx, ex, manager, std::make_tuple(policy_atom::value, name, spec_json),
      [ex, name](ok_atom) {
        ex->reply(http::response::json(202, json{{"name", name}, {"policy", "stored"}}.dump()));
      },
      field_errors(ex));
}

void remove(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto name = name_of(ex);
  ask(*ctx, ex, manager, std::make_tuple(caf::delete_atom::value, name), [ex, name](ok_atom) {
    ex->reply(http::response::json(202, json{{"name", name}, {"deleted", true}}.dump()));
  });
}

void list(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  ask(*ctx, ex, manager, std::make_tuple(get_atom::value), [ex](app_statuses& xs) {
    json out{{"apps", json::array()}};
    for (auto& s : xs)
      out["apps"].push_back(app_json(s, false));
    ex->reply(http::response::json(200, out.dump()));
  });
}

void status(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto name = name_of(ex);
  ask(*ctx, ex, manager, std::make_tuple(get_atom::value, name),
      [ex](app_status& s) { ex->reply(http::response::json(200, app_json(s, true).dump())); });
}

void scaling_history(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto name = name_of(ex);
  if (!persistence::get_app(*ctx->env, name)) {
    ex->reply(http::response::error(404, "not_found", "no app " + name, "name"));
    return;
  }
  // Newest first, a page at a time: ?limit (1..1000, 100) and ?cursor
  // (next_cursor of the page before).
  query_params params{ex->req()};
  auto limit = params.uint("limit", 100, 1, 1000);
  if (params.reply_if_bad(ex))
    return;
  auto cursor = ex->req().param("cursor").value_or("");
  run_read(*ctx, ex, [ctx, name, cursor, limit] {
    std::string next;
    auto page = persistence::scaling_page(*ctx->env, name, cursor, limit, next);
    json out{{"name", name},
             {"decisions", json::array()},
             {"next_cursor", next.empty() ? json(nullptr) : json(next)}};
    for (auto& d : page)
      out["decisions"].push_back(scaling_json(d));
    return http::response::json(200, out.dump());
  });
}

/// A window's samples of one quantity; NaN (no sample) becomes null.
json window_json(const metric_window_stats& w) {
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  return json{{"samples", w.count}, {"avg", num(w.avg)},   {"min", num(w.min)},
              {"max", num(w.max)},  {"p50", num(w.p50)},   {"p95", num(w.p95)},
              {"p99", num(w.p99)},  {"seconds", w.seconds}};
}

/// {"1m": {"cpu_percent": {...}, "rss_bytes": {...}}, "15m": …, "1h": …}.
json windows_json(const std::vector<metric_window_stats>& cpu,
                  const std::vector<metric_window_stats>& rss) {
  json out = json::object();
  for (const char* w : {"1m", "15m", "1h"}) {
    json one = json::object();
    for (auto& x : cpu)
      if (x.window == w)
        one["cpu_percent"] = window_json(x);
    for (auto& x : rss)
      if (x.window == w)
        one["rss_bytes"] = window_json(x);
    out[w] = one;
  }
  return out;
}

double window_field(const std::vector<metric_window_stats>& ws, const char* w,
                    double metric_window_stats::*field) {
  for (auto& x : ws)
    if (x.window == w)
      return x.*field;
  return 0;
}

/// The proxy's view of an app and its request series: requests per second,
/// error rate (5xx share) and latency percentiles per window.
json traffic_json(const app_traffic& t, const metric_snapshots& series) {
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  const metric_snapshot* duration = nullptr;
  std::vector<const metric_snapshot*> by_status;
  for (auto& s : series) {
    if (s.labels.empty() || s.labels[0] != t.app)
      continue;
    if (s.family == "apps.request.duration")
      duration = &s;
    else if (s.family == "apps.requests" && s.labels.size() == 2)
      by_status.push_back(&s);
  }
  double total = 0;
  double errors = 0;
  for (auto* s : by_status) {
    total += s->value;
    if (!s->labels[1].empty() && s->labels[1][0] == '5')
      errors += s->value;
  }
  json out{{"active_connections", t.active_connections},
           {"in_flight", t.in_flight},
           {"pending", t.pending},
           {"last_request",
            t.last_request_ns == 0 ? json(nullptr) : json(t.last_request_ns / 1'000'000'000.0)},
           {"requests_total", total},
           {"errors_total", errors},
           {"instances", json::array()},
           {"windows", json::object()}};
  for (auto& i : t.instances)
    out["instances"].push_back({{"id", i.instance},
                                {"in_flight", i.in_flight},
                                {"ejected", std::find(t.ejected.begin(), t.ejected.end(),
                                                      i.instance) != t.ejected.end()}});
  for (const char* w : {"1m", "15m", "1h"}) {
    double requests = 0;
    double failed = 0;
    for (auto* s : by_status) {
      auto n = window_field(s->windows, w, &metric_window_stats::sum);
      requests += n;
      if (!s->labels[1].empty() && s->labels[1][0] == '5')
        failed += n;
    }
    double seconds =
        duration ? window_field(duration->windows, w, &metric_window_stats::seconds) : 0;
    json latency = nullptr;
    if (duration)
      for (auto& x : duration->windows)
        if (x.window == w && x.count > 0)
          latency = {{"samples", x.count}, {"avg", num(x.avg)}, {"p50", num(x.p50)},
                     {"p95", num(x.p95)},  {"p99", num(x.p99)}, {"max", num(x.max)}};
    out["windows"][w] = {{"requests", requests},
                         {"rps", seconds > 0 ? requests / seconds : 0.0},
                         {"error_rate", requests > 0 ? failed / requests : 0.0},
                         {"latency_seconds", latency},
                         {"seconds", seconds}};
  }
  return out;
}

/// Adds the proxy's part to an app's metrics document and answers.
void add_traffic(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex,
                 std::shared_ptr<json> doc) {
  auto name = (*doc)["name"].get<std::string>();
  auto without = [ex, doc](const api_error& e) {
    (*doc)["traffic"] = nullptr;
    (*doc)["traffic_unavailable"] = e.message;
    ex->reply(http::response::json(200, doc->dump()));
  };
  ask(
      *ctx, ex, proxy, std::make_tuple(get_atom::value, name),
      [ctx, ex, doc, without](app_traffic& t) {
        ask(
            *ctx, ex, registry, std::make_tuple(get_atom::value),
            [ex, doc, t](metric_snapshots& series) {
              (*doc)["traffic"] = traffic_json(t, series);
              ex->reply(http::response::json(200, doc->dump()));
            },
            without);
      },
      without);
}

void usage(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto name = name_of(ex);
  ask(*ctx, ex, manager, std::make_tuple(usage_atom::value, name), [ctx, ex](app_usage& u) {
    json out{{"name", u.name},
             {"cpu_percent", u.cpu_percent},
             {"rss_bytes", u.rss_bytes},
             {"windows", windows_json(u.cpu, u.rss)},
             {"instances", json::array()}};
    std::sort(u.instances.begin(), u.instances.end(), [](auto& a, auto& b) { return a.id < b.id; });
    for (auto& x : u.instances)
      out["instances"].push_back(
          {{"id", x.id},
           {"cpu_percent", x.cpu_percent},
           {"rss_bytes", x.rss_bytes},
           {"sampled_at",
            x.sampled_at_ns == 0 ? json(nullptr) : json(x.sampled_at_ns / 1'000'000'000.0)},
           {"windows", windows_json(x.cpu, x.rss)}});
    add_traffic(ctx, ex, std::make_shared<json>(std::move(out)));
  });
}

void logs(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto name = name_of(ex);
  if (!persistence::get_app(*ctx->env, name)) {
    ex->reply(http::response::error(404, "not_found", "no app " + name, "name"));
    return;
  }
  serve_logs(ctx, ex, name);
}

} // namespace

void add_app_routes(http::router& r, std::shared_ptr<node_context> ctx) {
  r.add("POST", "/apps/register", {http::role::submit, http::body_kind::json},
        [ctx](const http::exchange_ptr& ex) { register_app(ctx, ex); });
  r.add("POST", "/apps/{name}/up", {http::role::submit},
        [ctx](const http::exchange_ptr& ex) { change_state<up_atom>(ctx, ex, "up"); });
  r.add("POST", "/apps/{name}/down", {http::role::submit},
        [ctx](const http::exchange_ptr& ex) { change_state<down_atom>(ctx, ex, "down"); });
  r.add("POST", "/apps/{name}/scale", {http::role::submit, http::body_kind::json},
        [ctx](const http::exchange_ptr& ex) { scale(ctx, ex); });
  r.add("POST", "/apps/{name}/policy", {http::role::submit, http::body_kind::json},
        [ctx](const http::exchange_ptr& ex) { policy(ctx, ex); });
  r.add("DELETE", "/apps/{name}", {http::role::submit},
        [ctx](const http::exchange_ptr& ex) { remove(ctx, ex); });
  r.add("GET", "/apps", {http::role::read}, [ctx](const http::exchange_ptr& ex) { list(ctx, ex); });
  r.add("GET", "/apps/{name}/status", {http::role::read},
        [ctx](const http::exchange_ptr& ex) { status(ctx, ex); });
  r.add("GET", "/apps/{name}/scaling", {http::role::read},
        [ctx](const http::exchange_ptr& ex) { scaling_history(ctx, ex); });
  r.add("GET", "/apps/{name}/metrics", {http::role::read},
        [ctx](const http::exchange_ptr& ex) { usage(ctx, ex); });
  r.add("GET", "/apps/{name}/logs", {http::role::read, http::body_kind::none, true},
        [ctx](const http::exchange_ptr& ex) { logs(ctx, ex); });
}

} // namespace troupe
