#include "actors/logs/log_batcher.hpp"

#include <map>
#include <tuple>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/names.hpp"
#include "actors/metrics/metrics_model.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

using self_ptr = log_batcher_actor::stateful_pointer<log_batcher_state>;
using std::chrono::milliseconds;

constexpr const char* cursor_key = persistence::loki_cursor_key;

std::shared_ptr<spdlog::logger> log() {
  return logging::get("loki");
}

void wait_for(self_ptr self, milliseconds d, log_batcher_state::wait_kind kind) {
  auto& st = self->state;
  st.waiting = kind;
  self->delayed_send(self, d, timeout_atom::value, ++st.wait_gen);
}

void save_cursor(self_ptr self) {
  if (auto store = lookup(self->system(), names::store))
    self->request(*store, std::chrono::seconds(30), write_atom::value,
                  write_batch{write_op{write_op::put, "meta", cursor_key,
                                       std::to_string(self->state.cursor)}})
        .then([](write_result&) {}, [](caf::error&) {});
}

/// Keeps at most outbox_bytes unshipped: everything older is dropped.
void enforce_outbox(self_ptr self) {
  auto& st = self->state;
  uint64_t bytes = 0;
  uint64_t keep_from = 0;
  st.env->read([&](persistence::txn& t) {
    t.scan_reverse("logs", {}, [&](std::string_view k, std::string_view v) {
      auto seq = persistence::seq_from_key(k);
      if (seq <= st.cursor)
        return false;
      bytes += v.size();
      if (bytes > st.cfg.outbox_bytes) {
        keep_from = seq + 1;
        return false;
      }
      return true;
    });
  });
  if (keep_from > st.cursor + 1) {
    auto n = keep_from - 1 - st.cursor;
    st.dropped += n;
    st.cursor = keep_from - 1;
    save_cursor(self);
    log()->warn("Loki outbox over {} bytes: dropped the {} oldest unshipped entries "
                "({} dropped so far)",
                st.cfg.outbox_bytes, n, st.dropped);
  }
}

std::vector<std::pair<std::string, std::string>> push_headers(const loki_config& cfg) {
  std::vector<std::pair<std::string, std::string>> h{{"Content-Type", "application/json"}};
  if (cfg.gzip)
    h.emplace_back("Content-Encoding", "gzip");
  if (!cfg.tenant.empty())
    h.emplace_back("X-Scope-OrgID", cfg.tenant);
  if (!cfg.bearer_token.empty())
    h.emplace_back("Authorization", "Bearer " + cfg.bearer_token);
  else if (!cfg.username.empty())
    h.emplace_back("Authorization", "Basic " + http::base64(cfg.username + ":" + cfg.password));
  return h;
}

/// The next batch after the cursor, already written as a push body: read in
/// place from the `logs` table, streams keyed by label set and level.
struct push_batch {
  size_t count = 0;
  size_t bytes = 0;
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
  int64_t first_ts = 0;
  std::string body;
};

push_batch read_batch(self_ptr self) {
  auto& st = self->state;
  push_batch b;
  bool label_mode = st.cfg.request_id_as == "label";
  loki::push_body_builder body;
  // A stream per label set and level (and request id in label mode).
  std::map<std::tuple<uint64_t, uint32_t, std::string>, size_t> streams;
  st.env->read([&](persistence::txn& t) {
    persistence::scan_logs(t, st.cursor, [&](const persistence::stored_line& s) {
      if (b.count > 0 && b.bytes + s.line.size() > st.cfg.batch_bytes)
        return false;
      if (b.count == 0) {
        b.first_seq = s.seq;
        b.first_ts = s.ts_ns;
      }
      b.last_seq = s.seq;
      ++b.count;
      b.bytes += s.line.size();
      auto level = st.levels.try_emplace(std::string{s.level}, st.levels.size()).first->second;
      auto& l = st.labels.get(t, s.labels);
      auto rid = persistence::request_id_of(s, l);
      auto [it, added] = streams.try_emplace(
          {s.labels, level, label_mode ? std::string{rid} : std::string{}}, body.streams());
      if (added) {
        // Loki shows labels sorted by name.
        std::vector<std::pair<std::string_view, std::string_view>> ls{
            {"instance", l.instance}, {"level", s.level}, {"namespace", l.ns}, {"node", l.node}};
        if (label_mode && !rid.empty())
          ls.emplace_back("request_id", rid);
        ls.emplace_back("service", l.service);
        ls.emplace_back("source", l.source);
        body.add_stream(ls);
      }
      body.add(it->second, s.ts_ns, s.line, label_mode ? std::string_view{} : rid);
      return b.count < static_cast<size_t>(st.cfg.batch_entries);
    });
  });
  if (st.levels.size() > 1024)
    st.levels.clear();
  b.body = body.finish();
  return b;
}

/// The sink's lag (entries committed but not shipped) on the gauge board the
/// metrics registry samples (nothing when run without one).
void report_lag(self_ptr self) {
  auto& st = self->state;
  if (st.gauges)
    st.gauges->set("logs.sink.lag", {"loki"},
                   static_cast<double>(st.head > st.cursor ? st.head - st.cursor : 0));
}

/// Sends at most one batch, then re-nudges itself: other messages (status,
/// shutdown) interleave with a long backlog.
void pump(self_ptr self) {
  auto& st = self->state;
  if (st.waiting != log_batcher_state::wait_kind::backoff && st.cursor < st.head) {
    st.waiting = log_batcher_state::wait_kind::none;
    auto batch = read_batch(self);
    if (batch.count == 0) {
      st.head = st.cursor;
      return;
    }
    if (st.pending_after != st.cursor) {
      st.pending_after = st.cursor;
      st.pending_since = self->clock().now();
    }
    auto waited = std::chrono::duration_cast<milliseconds>(self->clock().now() - st.pending_since);
    auto age = std::max(milliseconds{(now_ns() - batch.first_ts) / 1'000'000}, waited);
    loki::batch_limits limits{static_cast<size_t>(st.cfg.batch_entries),
                              static_cast<size_t>(st.cfg.batch_bytes), st.cfg.batch_wait};
    auto d = loki::decide(limits, batch.count, batch.bytes, std::max(age, milliseconds{0}));
    if (!d.flush) {
      wait_for(self, d.wait, log_batcher_state::wait_kind::batch);
      return;
    }
    auto now = self->clock().now();
    if (!(st.breaker->allow)(now)) {
      wait_for(self, st.cfg.breaker_cooldown, log_batcher_state::wait_kind::backoff);
      return;
    }
    auto body = std::move(batch.body);
    if (st.cfg.gzip)
      body = loki::gzip(body);
    auto res = http::fetch(st.base, "POST", "/loki/api/v1/push", push_headers(st.cfg), body,
                           st.cfg.timeout);
    switch (loki::classify(res.status)) {
    case loki::outcome::ok:
      st.breaker->success();
      if (st.failures > 0)
        log()->info("Loki is back after {} failed pushes", st.failures);
      st.failures = 0;
      st.shipped += batch.count;
      st.cursor = batch.last_seq;
      save_cursor(self);
      break;
    case loki::outcome::drop:
      st.breaker->success();
      st.failures = 0;
      st.rejected += batch.count;
      st.cursor = batch.last_seq;
      save_cursor(self);
      log()->error("Loki rejected a batch of {} entries (seq {}..{}) with {}: {}; skipping it",
                   batch.count, batch.first_seq, batch.last_seq, res.status,
                   res.body.substr(0, 300));
      break;
    case loki::outcome::retry: {
      st.breaker->failure(self->clock().now());
      ++st.failures;
      std::uniform_real_distribution<double> u{0.0, 1.0};
      auto delay =
          loki::backoff(st.failures, st.cfg.backoff_initial, st.cfg.backoff_max, u(st.rng));
      auto it = res.headers.find("retry-after");
      if (it != res.headers.end())
        if (auto ra = loki::retry_after(it->second, std::chrono::system_clock::now()))
          delay = std::max(delay, *ra);
      st.last_error = res.status == 0 ? res.error : "HTTP " + std::to_string(res.status);
      log()->warn("Loki push failed ({}), attempt {}; retrying in {} ms", st.last_error,
                  st.failures, delay.count());
      enforce_outbox(self);
      wait_for(self, delay, log_batcher_state::wait_kind::backoff);
      return;
    }
    }
    if (st.cursor < st.head)
      self->send(self, nudge_atom::value, st.head);
  }
}

} // namespace

log_batcher_actor::behavior_type log_batcher(self_ptr self,
                                             std::shared_ptr<persistence::lmdb_env> env,
                                             loki_config cfg,
                                             std::shared_ptr<metrics::gauge_board> gauges) {
  auto& st = self->state;
  st.gauges = std::move(gauges);
  st.env = std::move(env);
  st.cfg = std::move(cfg);
  std::string err;
  auto base = http::parse_url(st.cfg.url, &err);
  if (!base) {
    log()->error("logs.loki.url {}: {}", st.cfg.url, err);
    self->quit(caf::make_error(ec::invalid_argument, "logs.loki.url: " + err));
    return log_batcher_actor::behavior_type::make_empty_behavior();
  }
  st.base = *base;
  st.breaker.emplace(st.cfg.breaker_failures, st.cfg.breaker_cooldown);
  bool fresh = false;
  st.env->read([&](persistence::txn& t) {
    st.head = persistence::log_high_water(t);
    if (auto c = t.get("meta", cursor_key)) {
      st.cursor = std::stoull(*c);
      return;
    }
    // A newly enabled sink ships what the outbox still holds, like Promtail
    // reading a file from its start: the retained log, newest first up to
    // outbox_bytes — so troupe's own first lines reach Loki too.
    fresh = true;
    uint64_t bytes = 0;
    st.cursor = 0;
    t.scan_reverse("logs", {}, [&](std::string_view k, std::string_view v) {
      bytes += v.size();
      if (bytes > st.cfg.outbox_bytes) {
        st.cursor = persistence::seq_from_key(k);
        return false;
      }
      return true;
    });
  });
  if (st.cursor > st.head)
    st.cursor = st.head;
  // Remember where a newly enabled sink starts: after a crash it resumes
  // here instead of starting over.
  save_cursor(self);
  log()->info("shipping logs to {} from seq {}{}", st.cfg.url, st.cursor + 1,
              fresh ? " (new sink: the retained log first)" : "");
  return {
      [self](nudge_atom, uint64_t head) {
        self->state.head = std::max(self->state.head, head);
        pump(self);
        report_lag(self);
      },
      [self](timeout_atom, uint64_t gen) {
        if (gen != self->state.wait_gen)
          return;
        self->state.waiting = log_batcher_state::wait_kind::none;
        pump(self);
        report_lag(self);
      },
      [self](status_atom) {
        auto& st = self->state;
        auto state = st.breaker->current(self->clock().now());
        component_status x{log_batcher_state::name, state == loki::breaker::state::closed, {}};
        caf::put(x.fields, "url", st.cfg.url);
        caf::put(x.fields, "cursor", st.cursor);
        caf::put(x.fields, "lag", st.head - st.cursor);
        caf::put(x.fields, "shipped", st.shipped);
        caf::put(x.fields, "rejected", st.rejected);
        caf::put(x.fields, "dropped", st.dropped);
        caf::put(x.fields, "consecutive_failures", st.failures);
        caf::put(x.fields, "breaker",
                 state == loki::breaker::state::closed ? "closed"
                 : state == loki::breaker::state::open ? "open"
                                                       : "half_open");
        caf::put(x.fields, "last_error", st.last_error);
        return x;
      },
      [](shutdown_atom) -> ok_atom { return ok_atom::value; },
  };
}

} // namespace troupe
