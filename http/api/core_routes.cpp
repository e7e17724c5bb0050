#include "http/api/core_routes.hpp"

#include <charconv>
#include <chrono>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/event_bus.hpp"
#include "actors/core/event_stream.hpp"
#include "actors/core/names.hpp"
#include "actors/core/reader_pool.hpp"
#include "actors/core/status.hpp"
#include "actors/logs/log_stream.hpp"
#include "actors/metrics/metrics_exporter.hpp"
#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"
#include "troupe/build_info.hpp"

namespace troupe {

using nlohmann::json;

namespace {

/// Parses an unsigned query parameter; nullopt and a 400 reply if invalid.
std::optional<uint64_t> uint_param(const http::exchange_ptr& ex, const std::string& name,
                                   uint64_t fallback, uint64_t max) {
  auto raw = ex->req().param(name);
  if (!raw)
    return fallback;
  uint64_t value = 0;
  auto [ptr, err] = std::from_chars(raw->data(), raw->data() + raw->size(), value);
  if (err != std::errc{} || ptr != raw->data() + raw->size() || value > max) {
    ex->reply(http::response::error(400, "invalid_parameter",
                                    name + " must be an integer between 0 and " +
                                        std::to_string(max) + ", got \"" + *raw + "\"",
                                    name));
    return std::nullopt;
  }
  return value;
}

bool wants_sse(const http::request& req) {
  return req.header("accept").find("text/event-stream") != std::string::npos ||
         req.param("stream").value_or("") == "true";
}

void get_events(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto& req = ex->req();
  if (wants_sse(req)) {
    std::optional<uint64_t> last;
    auto& header = req.header("last-event-id");
    auto raw = !header.empty() ? std::optional<std::string>{header} : req.param("last_event_id");
    if (raw) {
      uint64_t v = 0;
      auto [ptr, err] = std::from_chars(raw->data(), raw->data() + raw->size(), v);
      if (err != std::errc{} || ptr != raw->data() + raw->size()) {
        ex->reply(http::response::error(400, "invalid_parameter",
                                        "Last-Event-ID must be an event sequence number",
                                        "Last-Event-ID"));
        return;
      }
      last = v;
    }
    auto stream = ex->stream();
    ctx->sys->spawn(event_stream, stream, ctx->env, last);
    return;
  }
  auto since = uint_param(ex, "since", 0, UINT64_MAX);
  if (!since)
    return;
  auto limit = uint_param(ex, "limit", 100, 1000);
  if (!limit)
    return;
  run_read(*ctx, ex, [ctx, ex, since = *since, limit = *limit] {
    std::vector<event> events;
    try {
      events = persistence::read_events(*ctx->env, since, limit);
    } catch (const std::exception& e) {
      ex->reply(http::response::error(500, "store_failure", e.what()));
      return;
    }
    std::string body = "{\"events\":[";
    for (size_t i = 0; i < events.size(); ++i) {
      if (i > 0)
        body += ',';
      body += to_json(events[i]);
    }
    body += "],\"next_since\":";
    body += std::to_string(events.empty() ? since : events.back().seq);
    body += '}';
    ex->reply(http::response::json(200, std::move(body)));
  });
}

void get_readyz(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  if (ctx->stopping()) {
    ex->reply(http::response::json(
        503, R"({"status":"not_ready","reason":"shutting down","checks":{}})"));
    return;
  }
  auto started = std::chrono::steady_clock::now();
  auto rid = logging::current_request_id();
  caf::anon_send(
      ctx->bridge(),
      bridge_task{
          [ctx, ex, started, rid](http_bridge_actor::pointer self) {
            auto store = lookup(self->system(), names::store);
            auto fail = [ex](const std::string& why) {
              json body{{"status", "not_ready"},
                        {"checks", {{"store", {{"status", "failing"}, {"error", why}}}}}};
              ex->reply(http::response::json(503, body.dump()));
            };
            if (!store) {
              fail("store actor is not running (restarting?)");
              return;
            }
            self->request(*store, std::chrono::seconds(2), flush_atom::value)
                .then(
                    [self, ctx, ex, started, fail](ok_atom) {
                      auto ms = std::chrono::duration<double, std::milli>(
                                    std::chrono::steady_clock::now() - started)
                                    .count();
                      json checks{{"store", {{"status", "ok"}, {"latency_ms", ms}}}};
                      try {
                        ctx->env->read(
                            [](persistence::txn& t) { return t.get("meta", "schema_version"); });
                      } catch (const std::exception& e) {
                        fail(e.what());
                        return;
                      }
                      auto jobs = lookup(self->system(), names::jobs);
                      if (!jobs) {
                        checks["jobs"] = {{"status", "failing"},
                                          {"error", "job controller is not running (restarting?)"}};
                        ex->reply(http::response::json(
                            503, json{{"status", "not_ready"}, {"checks", checks}}.dump()));
                        return;
                      }
                      // Queue depth and job counts by state ride along as details.
                      self->request(*jobs, std::chrono::seconds(2), status_atom::value)
                          .then(
                              [ctx, ex, checks](const component_status& stats) mutable {
                                auto details = status_json(stats);
                                details["status"] = "ok";
                                checks["jobs"] = std::move(details);
                                // Optional dependencies (Redis, Pushgateway, proxy upstreams) are
                                // shown, but do not make the node unready: jobs still run. Read
                                // from the board: the exporter may be inside a blocking call.
                                if (ctx->exporter_board) {
                                  auto exporter = ctx->exporter_board->get();
                                  checks["metrics_exporter"] = exporter
                                                                   ? status_json(*exporter)
                                                                   : json{{"status", "unknown"}};
                                }
                                ex->reply(http::response::json(
                                    200, json{{"status", "ready"}, {"checks", checks}}.dump()));
                              },
                              [ex, checks](caf::error& err) mutable {
                                checks["jobs"] = {{"status", "failing"},
                                                  {"error", caf::to_string(err)}};
                                ex->reply(http::response::json(
                                    503, json{{"status", "not_ready"}, {"checks", checks}}.dump()));
                              });
                    },
                    [fail, rid](caf::error& err) {
                      logging::request_scope scope{rid};
                      logging::get("http")->warn("readiness: store check failed: {}",
                                                 caf::to_string(err));
                      fail(caf::to_string(err));
                    });
          },
          ex->req().request_id});
}

/// Lines one GET /logs page looks at, at most, and the bytes of its body
/// (10,000 long lines would be hundreds of MB) before it ends early.
constexpr size_t logs_page_scan = 100'000;
constexpr size_t logs_page_bytes = 8u << 20;

void get_logs(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex) {
  auto& req = ex->req();
  persistence::log_query q;
  q.service = req.param("service").value_or("");
  q.instance = req.param("instance").value_or(req.param("job").value_or(""));
  q.level = req.param("level").value_or("");
  q.request_id = req.param("request_id").value_or("");
  q.source = req.param("source").value_or("");
  for (auto [name, out] : {std::pair{"since", &q.since_ns}, std::pair{"until", &q.until_ns}}) {
    if (auto raw = req.param(name)) {
      auto t = parse_time(*raw);
      if (!t) {
        ex->reply(http::response::error(
            400, "invalid_parameter",
            std::string{name} + " must be an RFC 3339 time or Unix seconds, got " + *raw, name));
        return;
      }
      *out = *t;
    }
  }
  auto limit = uint_param(ex, "limit", 1000, 10000);
  if (!limit)
    return;
  auto after = uint_param(ex, "after", 0, UINT64_MAX);
  if (!after)
    return;
  auto follow = req.param("follow").value_or("false");
  if (follow == "true" || follow == "1") {
    std::optional<uint64_t> last;
    auto& header = req.header("last-event-id");
    if (!header.empty()) {
      uint64_t v = 0;
      auto [ptr, err] = std::from_chars(header.data(), header.data() + header.size(), v);
      if (err != std::errc{} || ptr != header.data() + header.size()) {
        ex->reply(http::response::error(400, "invalid_parameter",
                                        "Last-Event-ID must be a log sequence number",
                                        "Last-Event-ID"));
        return;
      }
      last = v;
    } else if (req.param("after")) {
      last = *after;
    }
    auto stream = ex->stream();
    ctx->sys->spawn(log_stream, stream, ctx->env, q, last);
    return;
  }
  // Off the io thread and off the scheduler, and bounded: a page ends after
  // `limit` matches or after looking at logs_page_scan lines, however sparse
  // the filter.
  run_read(*ctx, ex, [ctx, ex, q, after = *after, limit = *limit] {
    uint64_t scanned = 0;
    std::string body;
    http::response res;
    try {
      persistence::query_logs_ndjson(*ctx->env, q, after, limit, scanned, body, logs_page_scan,
                                     logs_page_bytes);
      auto end = persistence::last_log_record_seq(*ctx->env);
      res.content_type = "application/x-ndjson";
      res.body = std::move(body);
      // Where the next page starts (pass it as ?after=), and whether one can.
      res.headers.emplace_back("X-Next-After", std::to_string(scanned));
      res.headers.emplace_back("X-More", scanned < end ? "true" : "false");
    } catch (const std::exception& e) {
      res = http::response::error(500, "store_failure", e.what());
    }
    ex->reply(std::move(res));
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
  r.add("GET", "/logs", {http::role::read, http::body_kind::none, true},
        [ctx](const http::exchange_ptr& ex) { get_logs(ctx, ex); });
  r.add("GET", "/healthz", {http::role::none}, [](const http::exchange_ptr& ex) {
    ex->reply(http::response::json(200, R"({"status":"ok"})"));
  });
  r.add("GET", "/readyz", {http::role::none},
        [ctx](const http::exchange_ptr& ex) { get_readyz(ctx, ex); });
  r.add("GET", "/version", {http::role::none}, [](const http::exchange_ptr& ex) {
    json body{{"version", build_info::version},
              {"git_sha", build_info::git_sha},
              {"build_type", build_info::build_type},
              {"schema_version", persistence::schema_version},
              {"caf", "0.17.6"},
              {"boost", "1.81"}};
    ex->reply(http::response::json(200, body.dump()));
  });
  r.add("GET", "/events", {http::role::read, http::body_kind::none, true},
        [ctx](const http::exchange_ptr& ex) { get_events(ctx, ex); });
  if (ctx->cfg->debug.fault_injection) {
    r.add("POST", "/debug/crash/{actor}", {http::role::admin},
          [ctx](const http::exchange_ptr& ex) { crash_actor(ctx, ex); });
  }
}

void run_read(const node_context& ctx, const http::exchange_ptr& ex, std::function<void()> read) {
  if (!ctx.readers) {
    ex->reply(http::response::error(503, "unavailable", "the node is not serving reads"));
    return;
  }
  if (ctx.readers->submit(std::move(read), ex->req().request_id))
    return;
  auto res = http::response::error(503, "busy",
                                   "too many reads in progress (" +
                                       std::to_string(ctx.readers->capacity()) +
                                       ", http.read_queue); retry shortly");
  res.headers.emplace_back("Retry-After", "1");
  ex->reply(std::move(res));
}

} // namespace troupe
