#include "http/api/core_routes.hpp"

#include <chrono>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/event_bus.hpp"
#include "actors/core/event_stream.hpp"
#include "actors/core/names.hpp"
#include "actors/core/status.hpp"
#include "actors/metrics/metrics_exporter.hpp"
#include "http/api/ask.hpp"
#include "http/api/page.hpp"
#include "http/api/query_params.hpp"
#include "http/api/versions.hpp"
#include "persistence/events.hpp"
#include "persistence/lmdb_env.hpp"
#include "runtime/ground/logging.hpp"
#include "troupe/build_info.hpp"

namespace troupe {

using nlohmann::json;

namespace {

bool wants_sse(const http::request& req) {
  return req.header("accept").find("text/event-stream") != std::string::npos ||
         req.param("stream").value_or("") == "true";
}

void get_events(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto& req = ex->req();
  query_params params{req};
  if (wants_sse(req)) {
    auto last = params.last_event_id("last_event_id");
    if (params.reply_if_bad(ex))
      return;
    auto stream = ex->stream();
    ctx->sys->spawn(event_stream, stream, ctx->env, last);
    return;
  }
  auto since = params.uint("since", 0, 0, UINT64_MAX);
  auto limit = params.uint("limit", 100, 0, 1000);
  if (params.reply_if_bad(ex))
    return;
  run_read(*ctx, ex, [ctx, since, limit] {
    auto events = persistence::read_events(*ctx->env, since, limit);
    auto next = events.empty() ? since : events.back().seq;
    return http::response::json(200,
                                page_body(
                                    "events", events, [](const event& e) { return to_json(e); },
                                    "next_since", std::to_string(next)));
  });
}

/// Who readiness asks: the store (a flush proves it writes) and the job controller.
const callee<store_actor> store_check{names::store, "store actor is not running (restarting?)",
                                      std::chrono::seconds(2)};
const callee<job_controller_actor> jobs_check{
    names::jobs, "job controller is not running (restarting?)", std::chrono::seconds(2)};

/// Readiness once the store answered: the job controller's counts decide.
void check_jobs(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex,
                json checks) {
  ask(
      *ctx, ex, jobs_check, std::make_tuple(status_atom::value),
      [ctx, ex, checks](const component_status& stats) mutable {
        auto details = status_json(stats);
        details["status"] = "ok";
        checks["jobs"] = std::move(details);
        // Optional dependencies (Redis, Pushgateway, proxy upstreams) are
        // shown, but do not make the node unready: jobs still run. Read
        // from the board: the exporter may be inside a blocking call.
        if (ctx->exporter_board) {
          auto exporter = ctx->exporter_board->get();
          checks["metrics_exporter"] =
              exporter ? status_json(*exporter) : json{{"status", "unknown"}};
        }
        ex->reply(http::response::json(200, json{{"status", "ready"}, {"checks", checks}}.dump()));
      },
      [ex, checks](const api_error& e) mutable {
        checks["jobs"] = {{"status", "failing"}, {"error", e.message}};
        ex->reply(
            http::response::json(503, json{{"status", "not_ready"}, {"checks", checks}}.dump()));
      });
}

void get_readyz(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  if (ctx->stopping()) {
    ex->reply(http::response::json(
        503, R"({"status":"not_ready","reason":"shutting down","checks":{}})"));
    return;
  }
  auto started = std::chrono::steady_clock::now();
  auto fail = [ex](const std::string& why) {
    json body{{"status", "not_ready"},
              {"checks", {{"store", {{"status", "failing"}, {"error", why}}}}}};
    ex->reply(http::response::json(503, body.dump()));
  };
  ask(
      *ctx, ex, store_check, std::make_tuple(flush_atom::value),
      [ctx, ex, started, fail](ok_atom) {
        auto ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
                .count();
        json checks{{"store", {{"status", "ok"}, {"latency_ms", ms}}}};
        try {
          ctx->env->read([](persistence::txn& t) { return t.get("meta", "schema_version"); });
        } catch (const std::exception& e) {
          fail(e.what());
          return;
        }
        check_jobs(ctx, ex, std::move(checks));
      },
      [fail](const api_error& e) {
        logging::get("http")->warn("readiness: store check failed: {}", e.message);
        fail(e.message);
      });
}

/// The actors POST /debug/crash/{actor} may kill (README: debug.fault_injection):
/// the ones whose restart the supervisor and the clients are tested against.
const std::vector<std::string>& crashable_actors() {
  static const std::vector<std::string> names{"store", "event_bus"};
  return names;
}

void crash_actor(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto& name = ex->req().params.at("actor");
  auto& allowed = crashable_actors();
  if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
    std::string list;
    for (auto& a : allowed)
      list += (list.empty() ? "" : ", ") + a;
    ex->reply(http::response::error(
        404, "not_found", "no crashable actor named " + name + "; allowed: " + list, "actor"));
    return;
  }
  auto hdl = ctx->sys->registry().get(caf::atom_from_string(name));
  if (!hdl) {
    ex->reply(http::response::error(404, "not_found", "no running actor named " + name, "actor"));
    return;
  }
  logging::get("debug")->warn("fault injection: killing {}", name);
  caf::anon_send_exit(hdl, caf::exit_reason::kill);
  ex->reply(http::response::json(202, json{{"crashed", name}}.dump()));
}

} // namespace

void add_node_routes(http::router& r, std::shared_ptr<node_context> ctx) {
  r.add("GET", "/healthz", {http::role::none}, [](const http::exchange_ptr& ex) {
    ex->reply(http::response::json(200, R"({"status":"ok"})"));
  });
  r.add("GET", "/readyz", {http::role::none},
        [ctx](const http::exchange_ptr& ex) { get_readyz(ctx, ex); });
  r.add("GET", "/version", {http::role::none}, [](const http::exchange_ptr& ex) {
    json body{{"version", build_info::version},
              {"git_sha", build_info::git_sha},
              {"build_type", build_info::build_type},
              {"schema_version", persistence::schema_version}};
    for (auto& [library, version] : library_versions())
      body[library] = version;
    ex->reply(http::response::json(200, body.dump()));
  });
  r.add("GET", "/events", {http::role::read, http::body_kind::none, true},
        [ctx](const http::exchange_ptr& ex) { get_events(ctx, ex); });
  if (ctx->cfg->debug.fault_injection) {
    r.add("POST", "/debug/crash/{actor}", {http::role::admin},
          [ctx](const http::exchange_ptr& ex) { crash_actor(ctx, ex); });
  }
}

} // namespace troupe
