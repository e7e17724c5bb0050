#include "actors/jobs/job_retention.hpp"

#include <optional>

#include "actors/core/event_bus.hpp"
#include "persistence/events.hpp"
#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/clock.hpp"

namespace troupe::job_control {

namespace {

using persistence::job_record;

/// Lines removed per store transaction by the log retention: each stays a
/// bounded transaction however large the backlog.
constexpr uint64_t trim_lines_per_batch = 100'000;

/// Removes the oldest log lines beyond logs.retention / logs.max_bytes, one
/// bounded batch after the other until nothing is due.
void trim_logs(self_ptr self) {
  auto& st = self->state;
  if (st.trimming || st.shutting_down)
    return;
  std::optional<persistence::log_trim> plan;
  try {
    plan = persistence::plan_log_trim(*st.ctx->env, now_ns(),
                                      std::chrono::nanoseconds(st.ctx->log_retention).count(),
                                      st.ctx->log_max_bytes, trim_lines_per_batch);
  } catch (const std::exception& e) {
    log()->warn("log retention: {}", e.what());
    return;
  }
  if (!plan)
    return;
  st.trimming = true;
  auto p = *plan;
  persist(
      self, write_batch{p.op},
      [self, p] {
        auto& st = self->state;
        st.trimming = false;
        st.log_lines_trimmed += p.lines;
        log()->info("log retention: removed lines {}..{} ({} lines; the table held {} MiB)",
                    p.first_seq, p.last_seq, p.lines, p.table_bytes >> 20);
        if (p.unshipped > 0)
          log()->warn("log retention removed {} lines the Loki sink had not shipped yet "
                      "(logs.retention / logs.max_bytes reached while Loki was behind)",
                      p.unshipped);
        if (p.more)
          trim_logs(self);
      },
      [self](caf::error& err) {
        self->state.trimming = false;
        log()->warn("log retention failed: {}", caf::to_string(err));
      });
}

/// Removes events older than jobs.retention (the audit log keeps what the
/// jobs it tells about keep), one bounded batch per sweep.
void trim_events(self_ptr self) {
  auto& st = self->state;
  if (st.trimming_events || st.shutting_down)
    return;
  bool more = false;
  std::optional<write_op> op;
  try {
    op = persistence::plan_event_trim(*st.ctx->env, now_ns(),
                                      std::chrono::nanoseconds(st.ctx->cfg.retention).count(),
                                      trim_lines_per_batch, more);
  } catch (const std::exception& e) {
    log()->warn("event retention: {}", e.what());
    return;
  }
  if (!op)
    return;
  st.trimming_events = true;
  persist(
      self, write_batch{*op},
      [self, more] {
        self->state.trimming_events = false;
        if (more)
          trim_events(self);
      },
      [self](caf::error& err) {
        self->state.trimming_events = false;
        log()->warn("event retention failed: {}", caf::to_string(err));
      });
}

/// The end of a sweep: the log and event retention follow (planned after
/// the purges landed: their lines count for the size cap).
void finish_sweep(self_ptr self) {
  auto& st = self->state;
  st.sweeping = false;
  if (st.swept_jobs > 0 || st.swept_workspaces > 0)
    log()->info("retention sweep: {} workspaces removed, {} jobs purged", st.swept_workspaces,
                st.swept_jobs);
  trim_logs(self);
  trim_events(self);
}

/// After a step: the next one (a message to itself, so that everything else
/// the controller does goes on between steps), or the end.
void next_sweep_step(self_ptr self, const std::string& next) {
  if (next.empty())
    finish_sweep(self);
  else
    self->send(self, sweep_atom::value, next);
}

} // namespace

/// One bounded step of a sweep from job id `from` on: it looks at
/// sweep_records_per_step records at most, removes at most
/// sweep_workspaces_per_step workspaces and purges at most about
/// sweep_lines_per_step log lines (a job whose log is not gone yet is
/// continued by the next step; its record goes with the last of its log),
/// all in one store transaction; then the janitor deletes the trees.
void sweep_step(self_ptr self, const std::string& from) {
  auto& st = self->state;
  if (st.shutting_down) {
    st.sweeping = false;
    return;
  }
  auto now = now_ns();
  auto ws_ttl = std::chrono::nanoseconds(st.ctx->cfg.workspace_retention).count();
  auto ttl = std::chrono::nanoseconds(st.ctx->cfg.retention).count();
  std::vector<job_record> records;
  std::string next;
  write_batch batch;
  std::vector<std::string> dirs;
  std::vector<std::string> purged;
  try {
    st.ctx->env->read([&](persistence::txn& t) {
      t.scan("jobs", from, [&](std::string_view k, std::string_view v) {
        if (records.size() == sweep_records_per_step) {
          next.assign(k);
          return false;
        }
        records.push_back(persistence::decode_job(v));
        return true;
      });
    });
    uint64_t budget = sweep_lines_per_step;
    for (auto& r : records) {
      if (!persistence::is_terminal(r.status) || r.ended_at == 0)
        continue;
      bool expired = now - r.ended_at >= ttl;
      bool ws_expired = !r.workspace.empty() && now - r.ended_at >= ws_ttl;
      if (budget == 0 || (dirs.size() == sweep_workspaces_per_step && (expired || ws_expired))) {
        next = r.id;
        break;
      }
      if (expired) {
        auto purge = persistence::purge_job_log_ops(*st.ctx->env, r.id, budget);
        budget -= std::min(budget, std::max<uint64_t>(purge.lines, 1));
        batch.insert(batch.end(), std::make_move_iterator(purge.ops.begin()),
                     std::make_move_iterator(purge.ops.end()));
        if (!purge.complete) {
          next = r.id; // the next step goes on with this log
          break;
        }
        if (!r.workspace.empty())
          dirs.push_back(r.workspace);
        batch.push_back(write_op{write_op::erase, "jobs", r.id, {}});
        purged.push_back(r.status);
      } else if (ws_expired) {
        dirs.push_back(r.workspace);
        auto rec = r;
        rec.workspace.clear();
        batch.push_back(record_op(rec));
      }
    }
  } catch (const std::exception& e) {
    log()->warn("retention sweep: {}", e.what());
    finish_sweep(self);
    return;
  }
  if (batch.empty()) {
    next_sweep_step(self, next);
    return;
  }
  persist(
      self, std::move(batch),
      [self, purged, dirs, next] {
        auto& st = self->state;
        for (auto& s : purged)
          --st.counts[s];
        st.swept_jobs += purged.size();
        st.swept_workspaces += dirs.size();
        if (dirs.empty()) {
          next_sweep_step(self, next);
          return;
        }
        // Deleting trees blocks: the janitor does it; the next step waits for
        // it, so deletions never pile up.
        self->request(st.janitor, janitor_timeout, caf::delete_atom::value, dirs)
            .then([self, next](uint64_t) { next_sweep_step(self, next); },
                  [self, next](caf::error& err) {
                    log()->warn("retention sweep: workspaces not removed: {}", caf::to_string(err));
                    next_sweep_step(self, next);
                  });
      },
      [self](caf::error& err) {
        log()->warn("retention sweep failed: {}", caf::to_string(err));
        finish_sweep(self);
      });
}

/// Starts a sweep unless one is still going; the next is due an interval later.
void sweep(self_ptr self) {
  auto& st = self->state;
  self->delayed_send(self, st.ctx->cfg.sweep_interval, sweep_atom::value);
  if (st.sweeping || st.shutting_down)
    return;
  st.sweeping = true;
  st.swept_jobs = 0;
  st.swept_workspaces = 0;
  sweep_step(self, {});
}

} // namespace troupe::job_control
