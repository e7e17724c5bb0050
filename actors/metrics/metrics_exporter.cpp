#include "actors/metrics/metrics_exporter.hpp"

#include <cmath>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/names.hpp"
#include "actors/metrics/metrics.hpp"
#include "actors/metrics/metrics_export.hpp"
#include "actors/metrics/prometheus.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

using nlohmann::json;
using self_ptr = metrics_exporter_actor::stateful_pointer<metrics_exporter_state>;

std::shared_ptr<spdlog::logger> log() {
  return logging::get("metrics");
}

std::string key_prefix(const redis_metrics_config& r) {
  return r.prefix + ":" + r.tenant + ":" + r.project + ":";
}

/// `s` matched literally by a Redis glob pattern.
std::string glob_escaped(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\')
      out += '\\';
    out += c;
  }
  return out;
}

/// Marks an exporter ok or failing; logs transitions only (no log storms).
void mark(std::string& status, std::string& error, const char* what, const std::string& why) {
  auto next = why.empty() ? "ok" : "failing";
  if (status != next) {
    if (why.empty())
      log()->info("{}: recovered", what);
    else
      log()->warn("{}: {}", what, why);
  }
  status = next;
  error = why;
}

/// Proxy mode: every upstream's series, handed to the registry.
void poll_upstreams(self_ptr self, const metrics_actor& registry, json& summary) {
  auto& st = self->state;
  std::vector<std::pair<std::string, std::string>> headers;
  if (!st.cfg.proxy.auth_header_name.empty())
    headers.emplace_back(st.cfg.proxy.auth_header_name, st.cfg.proxy.auth_header_value);
  std::string errors;
  auto report = json::object();
  for (auto& up : st.upstreams) {
    auto name = up.scheme + "://" + up.host + ":" + up.port + (up.target == "/" ? "" : up.target);
    auto res = http::fetch(up, "GET", "/monitoring/system", headers, {}, st.cfg.proxy.timeout);
    std::string why;
    if (res.status == 0)
      why = res.error;
    else if (res.status != 200)
      why = "HTTP " + std::to_string(res.status);
    std::optional<metric_snapshots> snaps;
    if (why.empty()) {
      snaps = metrics::snapshots_from_monitoring(res.body, &why);
      if (!snaps)
        why = "malformed /monitoring/system: " + why;
    }
    if (snaps) {
      report[name] = {{"status", "ok"}, {"series", snaps->size()}};
      if (registry)
        self->send(registry, proxied_atom::value, name, std::move(*snaps));
    } else {
      report[name] = {{"status", "failing"}, {"error", why}};
      errors += (errors.empty() ? "" : "; ") + name + ": " + why;
      // Its series go (as a down target's do in Prometheus) rather than
      // being re-exported, stale, for ever.
      if (registry)
        self->send(registry, proxied_atom::value, name, metric_snapshots{});
    }
  }
  mark(st.proxy_status, st.proxy_error, "metrics proxy", errors);
  summary["proxy"] = std::move(report);
}

/// Redis mode, read side: sums the fresh per-process SSE counts.
void fold_redis(self_ptr self, const metrics_actor& registry, json& summary) {
  auto& st = self->state;
  auto& rc = st.cfg.redis;
  std::string err;
  auto pattern = glob_escaped(key_prefix(rc)) + "sse:connections:*";
  auto keys = st.redis->scan(pattern, &err);
  if (!keys) {
    mark(st.redis_status, st.redis_error, "metrics redis", err);
    summary["redis"] = {{"status", "failing"}, {"error", err}};
    return;
  }
  auto now = static_cast<double>(now_ns()) / 1e9;
  auto max_age = std::chrono::duration<double>(rc.stats_max_age).count();
  double total = 0;
  uint64_t fresh = 0, stale = 0, malformed = 0;
  for (auto& key : *keys) {
    auto r = st.redis->command({"GET", key}, &err);
    if (!r) {
      mark(st.redis_status, st.redis_error, "metrics redis", err);
      summary["redis"] = {{"status", "failing"}, {"error", err}};
      return;
    }
    if (r->type != redis::reply::kind::string)
      continue; // expired between SCAN and GET (its TTL ran out)
    auto stat = parse_sse_stat(r->str);
    if (!stat) {
      ++malformed;
      continue;
    }
    // Publishers in milliseconds are read as such; a timestamp further in
    // the future than max_age is a broken clock, not a fresh entry.
    auto ts = stat->ts > 1e11 ? stat->ts / 1000 : stat->ts;
    if (now - ts > max_age || ts - now > max_age) {
      ++stale;
      continue;
    }
    ++fresh;
    total += stat->count;
  }
  st.folded_keys = fresh;
  if (registry)
    self->send(registry,
               metric_deltas{gauge_delta("redis.sse.connections", {rc.tenant, rc.project}, total)});
  summary["redis"] = {{"status", "ok"},
                      {"sse_connections", total},
                      {"fresh_keys", fresh},
                      {"stale_keys", stale},
                      {"malformed_keys", malformed}};
}

/// Redis mode, write side: every series' windows under ...:metrics:{series}.
void write_back(self_ptr self, const metric_snapshots& snaps, json& summary) {
  auto& st = self->state;
  auto& rc = st.cfg.redis;
  auto ttl_ms = std::to_string(rc.ttl.count());
  std::string err;
  uint64_t written = 0;
  for (auto& s : snaps) {
    auto fam = metrics::find_family(s.family);
    if (fam == nullptr)
      continue;
    auto key = key_prefix(rc) + "metrics:" + metrics::series_id(*fam, s.labels);
    auto r = st.redis->command(
        {"SET", key, metrics::snapshot_json(s, st.names).dump(), "PX", ttl_ms}, &err);
    if (!r || r->type == redis::reply::kind::error) {
      auto why = r ? r->str : err;
      mark(st.redis_status, st.redis_error, "metrics redis", why);
      summary["redis"]["status"] = "failing";
      summary["redis"]["error"] = why;
      return;
    }
    ++written;
  }
  st.written_keys = written;
  st.last_redis_ok_ns = now_ns();
  mark(st.redis_status, st.redis_error, "metrics redis", {});
  summary["redis"]["written_keys"] = written;
}

void push(self_ptr self, const std::string& exposition, json& summary) {
  auto& st = self->state;
  if (st.stopping) {
    summary["pushgateway"] = {{"status", "ok"}, {"skipped", "shutting down"}};
    return; // the group is deleted (or about to be): do not recreate it
  }
  auto res = http::fetch(*st.pushgateway, "PUT", st.push_path,
                         {{"Content-Type", "text/plain; version=0.0.4; charset=utf-8"}}, exposition,
                         st.cfg.pushgateway.timeout);
  std::string why;
  if (res.status == 0)
    why = res.error;
  else if (res.status / 100 != 2)
    why = "HTTP " + std::to_string(res.status) + ": " + res.body.substr(0, 300);
  mark(st.push_status, st.push_error, "metrics pushgateway", why);
  if (why.empty()) {
    st.pushed = true;
    st.last_push_ok_ns = now_ns();
    summary["pushgateway"] = {{"status", "ok"}, {"bytes", exposition.size()}};
  } else {
    summary["pushgateway"] = {{"status", "failing"}, {"error", why}};
  }
}

bool failed(const json& summary) {
  for (auto& [k, v] : summary.items())
    if (v.is_object() && v.value("status", "") == "failing")
      return true;
  return false;
}

/// One export cycle; `done` gets the summary.
void cycle(self_ptr self, std::function<void(json)> done) {
  auto& st = self->state;
  ++st.cycles;
  json summary = json::object();
  // Invalid if the registry is not running: each use below checks.
  auto registry = lookup(self->system(), names::metrics).value_or(metrics_actor{});
  if (st.cfg.mode == "proxy")
    poll_upstreams(self, registry, summary);
  if (st.redis)
    fold_redis(self, registry, summary);
  bool want_snaps = st.redis && summary["redis"].value("status", "") == "ok";
  bool want_push = st.pushgateway.has_value();
  if (!want_snaps && !want_push) {
    done(std::move(summary));
    return;
  }
  if (!registry) {
    summary["registry"] = {{"status", "failing"}, {"error", "metrics registry is not running"}};
    done(std::move(summary));
    return;
  }
  auto sum = std::make_shared<json>(std::move(summary));
  auto then_push = [self, registry, sum, done, want_push] {
    if (!want_push) {
      done(std::move(*sum));
      return;
    }
    self->request(registry, std::chrono::seconds(30), prometheus_atom::value)
        .then(
            [self, sum, done](std::string& text) {
              push(self, text, *sum);
              done(std::move(*sum));
            },
            [sum, done](caf::error& err) {
              (*sum)["pushgateway"] = {{"status", "failing"}, {"error", caf::to_string(err)}};
              done(std::move(*sum));
            });
  };
  if (!want_snaps) {
    then_push();
    return;
  }
  self->request(registry, std::chrono::seconds(30), get_atom::value)
      .then(
          [self, sum, then_push](metric_snapshots& snaps) {
            write_back(self, snaps, *sum);
            then_push();
          },
          [sum, then_push](caf::error& err) {
            (*sum)["redis"]["status"] = "failing";
            (*sum)["redis"]["error"] = caf::to_string(err);
            then_push();
          });
}

/// Each exporter's state; healthy while none is failing.
component_status status_of(const metrics_exporter_state& st) {
  component_status x{metrics_exporter_state::name, true, {}};
  auto entry = [&x](const std::string& what, const std::string& status, const std::string& error,
                    int64_t last_ok) {
    caf::put(x.fields, what + ".status", status);
    if (!error.empty())
      caf::put(x.fields, what + ".error", error);
    if (last_ok > 0)
      caf::put(x.fields, what + ".last_success", rfc3339(last_ok));
    x.healthy = x.healthy && status != "failing";
  };
  caf::put(x.fields, "cycles", st.cycles);
  entry("redis", st.redis_status, st.redis_error, st.last_redis_ok_ns);
  entry("pushgateway", st.push_status, st.push_error, st.last_push_ok_ns);
  entry("proxy", st.proxy_status, st.proxy_error, 0);
  return x;
}

/// What the board shows once the exporter is gone.
component_status stopped_status(const caf::error& reason) {
  component_status x{metrics_exporter_state::name, false, {}};
  caf::put(x.fields, "status", "stopped");
  caf::put(x.fields, "reason", caf::to_string(reason));
  return x;
}

} // namespace

std::optional<sse_stat> parse_sse_stat(std::string_view value) {
  auto doc = json::parse(value, nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return std::nullopt;
  sse_stat s;
  bool has_count = false, has_ts = false;
  for (auto name : {"count", "connections", "value"})
    if (auto i = doc.find(name); i != doc.end() && i->is_number()) {
      s.count = i->get<double>();
      has_count = true;
      break;
    }
  for (auto name : {"ts", "timestamp"})
    if (auto i = doc.find(name); i != doc.end() && i->is_number()) {
      s.ts = i->get<double>();
      has_ts = true;
      break;
    }
  if (!has_count || !has_ts || !std::isfinite(s.count) || s.count < 0)
    return std::nullopt;
  return s;
}

metrics_exporter_actor::behavior_type
metrics_exporter(metrics_exporter_actor::stateful_pointer<metrics_exporter_state> self,
                 metrics_config cfg, bool schedule, std::shared_ptr<exporter_status> board) {
  auto& st = self->state;
  st.names = metrics::naming{cfg.mapping};
  st.cfg = std::move(cfg);
  if (st.cfg.mode == "redis") {
    std::string why;
    auto where = redis::parse_url(st.cfg.redis.url, &why);
    if (where) {
      st.redis = std::make_unique<redis::client>(*where, st.cfg.redis.timeout);
      st.redis_status = "unknown";
    } else {
      st.redis_status = "failing";
      st.redis_error = why;
    }
  }
  if (!st.cfg.pushgateway.url.empty()) {
    st.pushgateway = http::parse_url(st.cfg.pushgateway.url);
    prom::labels grouping;
    if (!st.cfg.pushgateway.grouping.empty()) {
      auto doc = json::parse(st.cfg.pushgateway.grouping, nullptr, false);
      for (auto& [k, v] : doc.items())
        grouping.emplace_back(k, v.get<std::string>());
    }
    st.push_path = prom::pushgateway_path(st.cfg.pushgateway.job, grouping);
    st.push_status = "unknown";
  }
  if (st.cfg.mode == "proxy") {
    std::string_view rest = st.cfg.proxy.urls;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      if (auto u = http::parse_url(rest.substr(0, comma)))
        st.upstreams.push_back(*u);
      if (comma == std::string_view::npos)
        break;
      rest.remove_prefix(comma + 1);
    }
    st.proxy_status = "unknown";
  }
  st.board = std::move(board);
  if (st.board) {
    st.board->set(status_of(st));
    // A stopped exporter must not look healthy until its successor starts.
    self->attach_functor(
        [board = st.board](const caf::error& reason) { board->set(stopped_status(reason)); });
  }
  if (schedule) {
    if (st.cfg.export_on_start)
      self->send(self, tick_atom::value);
    else
      self->delayed_send(self, st.cfg.export_interval, tick_atom::value);
  }
  return {
      [self](tick_atom) {
        if (self->state.stopping)
          return;
        cycle(self, [self](json summary) {
          auto& st = self->state;
          if (failed(summary))
            log()->debug("export cycle: {}", summary.dump());
          if (st.board)
            st.board->set(status_of(st));
          if (!st.stopping)
            self->delayed_send(self, st.cfg.export_interval, tick_atom::value);
        });
      },
      [self](export_atom) -> caf::result<std::string> {
        auto rp = self->make_response_promise<std::string>();
        cycle(self, [self, rp](json summary) mutable {
          if (self->state.board)
            self->state.board->set(status_of(self->state));
          summary["ok"] = !failed(summary);
          rp.deliver(summary.dump());
        });
        return rp;
      },
      [self](status_atom) { return status_of(self->state); },
      [self](shutdown_atom) -> ok_atom {
        auto& st = self->state;
        st.stopping = true;
        if (st.pushgateway && st.pushed) {
          auto res = http::fetch(*st.pushgateway, "DELETE", st.push_path, {}, {},
                                 st.cfg.pushgateway.timeout);
          if (res.status / 100 == 2)
            log()->info("pushgateway group {} deleted", st.push_path);
          else
            log()->warn("could not delete pushgateway group {}: {}", st.push_path,
                        res.status == 0 ? res.error : "HTTP " + std::to_string(res.status));
          st.pushed = false;
        }
        return ok_atom::value;
      },
  };
}

} // namespace troupe
