#include "http/api/log_routes.hpp"

#include <caf/actor_system.hpp>

#include "actors/logs/log_stream.hpp"
#include "http/api/query_params.hpp"
#include "persistence/logs.hpp"

namespace troupe {

namespace {

/// Lines one GET /logs page looks at, at most, and the bytes of its body
/// (10,000 long lines would be hundreds of MB) before it ends early.
constexpr size_t logs_page_scan = 100'000;
constexpr size_t logs_page_bytes = 8u << 20;

} // namespace

void serve_logs(const std::shared_ptr<node_context>& ctx, const http::exchange_ptr& ex,
                const std::optional<std::string>& service) {
  auto& req = ex->req();
  persistence::log_query q;
  q.service = service ? *service : req.param("service").value_or("");
  q.instance = req.param("instance").value_or(req.param("job").value_or(""));
  q.level = req.param("level").value_or("");
  q.request_id = req.param("request_id").value_or("");
  q.source = req.param("source").value_or("");
  query_params params{req};
  q.since_ns = params.time("since").value_or(q.since_ns);
  q.until_ns = params.time("until").value_or(q.until_ns);
  auto limit = params.uint("limit", 1000, 0, 10000);
  auto after = params.uint("after", 0, 0, UINT64_MAX);
  auto follow = req.param("follow").value_or("false");
  bool following = follow == "true" || follow == "1";
  std::optional<uint64_t> last;
  if (following)
    last = params.last_event_id();
  if (params.reply_if_bad(ex))
    return;
  if (following) {
    if (!last && req.param("after"))
      last = after;
    auto stream = ex->stream();
    ctx->sys->spawn(log_stream, stream, ctx->env, q, last);
    return;
  }
  // Off the io thread and off the scheduler, and bounded: a page ends after
  // `limit` matches or after looking at logs_page_scan lines, however sparse
  // the filter.
  run_read(*ctx, ex, [ctx, q, after, limit] {
    uint64_t scanned = 0;
    http::response res;
    res.content_type = "application/x-ndjson";
    persistence::query_logs_ndjson(*ctx->env, q, after, limit, scanned, res.body, logs_page_scan,
                                   logs_page_bytes);
    auto end = persistence::last_log_record_seq(*ctx->env);
    // Where the next page starts (pass it as ?after=), and whether one can.
    res.headers.emplace_back("X-Next-After", std::to_string(scanned));
    res.headers.emplace_back("X-More", scanned < end ? "true" : "false");
    return res;
  });
}

void add_log_routes(http::router& r, std::shared_ptr<node_context> ctx) {
  r.add("GET", "/logs", {http::role::read, http::body_kind::none, true},
        [ctx](const http::exchange_ptr& ex) { serve_logs(ctx, ex); });
}

} // namespace troupe
