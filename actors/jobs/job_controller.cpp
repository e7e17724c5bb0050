#include "actors/jobs/job_controller.hpp"

#include <csignal>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
#include "actors/core/retrying_request.hpp"
#include "actors/core/status.hpp"
#include "actors/metrics/metrics.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

using self_ptr = job_controller_actor::stateful_pointer<job_controller_state>;
namespace js = persistence::job_status;
using persistence::job_record;

constexpr auto store_timeout = std::chrono::seconds(30);
/// A /proc scan or a tree deletion that takes longer is given up on.
constexpr auto janitor_timeout = std::chrono::seconds(120);

std::shared_ptr<spdlog::logger> log() {
  return logging::get("jobs");
}

/// Queue depth, slots and job counts by state; healthy once recovered and
/// while not shutting down.
component_status status_of(const job_controller_state& st) {
  component_status x{job_controller_state::name, !st.recovering && !st.shutting_down, {}};
  caf::put(x.fields, "queue_depth", st.queue.size() + st.backing_off.size());
  caf::put(x.fields, "running", st.running.size());
  caf::put(x.fields, "slots", st.slots);
  caf::settings counts;
  for (auto s : {js::queued, js::running, js::succeeded, js::failed, js::cancelled, js::timed_out,
                 js::lost}) {
    auto i = st.counts.find(s);
    caf::put(counts, s, i != st.counts.end() ? i->second : 0);
  }
  caf::put(x.fields, "counts", std::move(counts));
  return x;
}

/// Announces a job transition (already committed) with the current counts.
void publish(self_ptr self, const std::string& type, const std::string& id,
             nlohmann::json extra = nlohmann::json::object()) {
  auto bus = lookup(self->system(), names::event_bus);
  if (!bus)
    return;
  extra["job_id"] = id;
  extra["jobs"] = status_json(status_of(self->state));
  self->request(*bus, store_timeout, publish_atom::value, make_event(type, extra.dump()))
      .then([](uint64_t) {},
            [type](caf::error& err) {
              log()->warn("{} event not published: {}", type, caf::to_string(err));
            });
}

/// Writes `batch`; a store that is away fails the write at once (the
/// controller's callers answer or retry on their own schedule).
void persist(self_ptr self, write_batch batch, std::function<void()> then,
             std::function<void(caf::error&)> failed) {
  write_to_store(self, no_retry, nullptr, std::move(batch), std::move(then),
                 [failed](caf::error err) { failed(err); });
}

write_op record_op(const job_record& r) {
  return write_op{write_op::put, "jobs", r.id, persistence::encode(r)};
}

/// Queue depth, pressure and slot use as gauges of the metrics registry.
void report_gauges(self_ptr self) {
  auto& st = self->state;
  auto depth = static_cast<double>(st.queue.size() + st.backing_off.size());
  auto slots = static_cast<double>(std::max(1, st.slots));
  if (auto& board = st.ctx->gauges) {
    board->set("jobs.queue.depth", {}, depth);
    board->set("jobs.queue.pressure", {}, depth / slots);
    board->set("jobs.pool.utilization", {}, static_cast<double>(st.running.size()) / slots);
  }
  report_metrics(self->system(),
                 {gauge_delta("troupe.last_activity", {}, static_cast<double>(now_ns()) / 1e9)});
}

double seconds_between(caf::actor_clock::time_point from, caf::actor_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

void enqueue(self_ptr self, const job_record& r) {
  auto& st = self->state;
  st.queued_since.emplace(r.id, self->clock().now());
  job_controller_state::entry e{r.priority, st.next_order++, r.id};
  st.queue.insert(e);
  st.queued_index.emplace(r.id, e);
}

void try_start(self_ptr self) {
  auto& st = self->state;
  if (st.recovering || st.shutting_down) {
    report_gauges(self); // jobs still end meanwhile
    return;
  }
  while (static_cast<int>(st.running.size()) < st.slots && !st.queue.empty()) {
    auto e = *st.queue.begin();
    st.queue.erase(st.queue.begin());
    st.queued_index.erase(e.id);
    auto subs = st.subscribers[e.id];
    // Job actors monitor the controller: if it goes, they stop their
    // processes and end too (the next controller's recovery reconciles them).
    auto hdl = st.ctx->launch
                   ? st.ctx->launch(self->system(), e.id, job_controller_actor{self}, subs)
                   : self->spawn(job, st.ctx, e.id, job_controller_actor{self}, subs);
    self->monitor(hdl);
    st.running.emplace(e.id, hdl);
    --st.counts[js::queued];
    ++st.counts[js::running];
    auto now = self->clock().now();
    if (auto q = st.queued_since.find(e.id); q != st.queued_since.end()) {
      if (auto fam = metrics::find_family("jobs.queue.wait"))
        report_metrics(self->system(), {histogram_delta(*fam, {}, seconds_between(q->second, now),
                                                        st.ctx->metrics_accuracy)});
      st.queued_since.erase(q);
    }
    st.started_since[e.id] = now;
  }
  report_gauges(self);
}

void finish_cancels(self_ptr self, const std::string& id, const std::string& status) {
  auto& st = self->state;
  if (auto i = st.cancels.find(id); i != st.cancels.end()) {
    for (auto& rp : i->second)
      rp.deliver(status);
    st.cancels.erase(i);
  }
}

void maybe_done_shutting_down(self_ptr self) {
  auto& st = self->state;
  if (st.shutting_down && st.running.empty()) {
    for (auto& rp : st.shutdown_waiters)
      rp.deliver(ok_atom::value);
    st.shutdown_waiters.clear();
  }
}

/// Ends a job that never reached (or no longer has) a job actor.
void end_without_actor(
    self_ptr self, job_record rec, const std::string& status, const std::string& reason,
    std::function<void()> then = [] {},
    std::function<void(caf::error&)> failed = [](caf::error&) {}) {
  rec.status = status;
  rec.reason = reason;
  rec.ended_at = now_ns();
  rec.success = false;
  rec.pgid = 0;
  auto id = rec.id;
  self->state.ending.insert(id);
  persist(
      self, write_batch{record_op(rec)},
      [self, id, status, then] {
        auto& st = self->state;
        st.ending.erase(id);
        ++st.counts[status];
        job_update up;
        up.job_id = id;
        up.status = status;
        up.complete = true;
        for (auto& sub : st.subscribers[id])
          self->send(sub, up);
        st.subscribers.erase(id);
        publish(self, "job." + status, id, {{"status", status}});
        then();
      },
      [self, id, failed](caf::error& err) {
        self->state.ending.erase(id);
        log()->error("job {}: could not record its end: {}", id, caf::to_string(err));
        failed(err);
      });
}

/// Recovery: reconcile what a previous process of this node left behind.
/// Orphans of jobs left `running` are killed (by the janitor) before their
/// records change and before any job starts.
void recover(self_ptr self) {
  auto& st = self->state;
  std::vector<job_record> running;
  std::vector<job_record> requeued;
  persistence::for_each_job(*st.ctx->env, [&](const job_record& r) {
    ++st.counts[r.status];
    if (r.status == js::running)
      running.push_back(r);
    else if (r.status == js::queued)
      requeued.push_back(r);
    return true;
  });
  auto finish = [self](std::vector<job_record> requeued) {
    auto& st = self->state;
    auto now = now_ns();
    for (auto& r : requeued) {
      if (r.not_before > now) {
        st.backing_off.insert(r.id);
        self->delayed_send(self, std::chrono::nanoseconds(r.not_before - now), requeue_atom::value,
                           r.id);
      } else {
        enqueue(self, r);
      }
    }
    st.recovering = false;
    if (!requeued.empty())
      log()->info("recovery: {} queued jobs resume", requeued.size());
    try_start(self);
  };
  if (running.empty()) {
    finish(std::move(requeued));
    return;
  }
  // Records change only after the orphans are gone: a re-queued attempt
  // never runs beside the old one.
  auto reconcile = [self, running, requeued, finish](std::vector<uint64_t> killed) mutable {
    auto& st = self->state;
    write_batch batch;
    auto now = now_ns();
    for (size_t i = 0; i < running.size(); ++i) {
      auto rec = running[i];
      --st.counts[js::running];
      rec.pgid = 0;
      rec.ended_at = now;
      if (rec.attempt <= rec.retries) {
        rec.status = js::queued;
        rec.reason = "attempt " + std::to_string(rec.attempt) +
                     " was interrupted by a node restart; re-queued";
        rec.attempt += 1;
        rec.not_before = 0;
        requeued.push_back(rec);
        ++st.counts[js::queued];
      } else {
        rec.status = js::lost;
        rec.success = false;
        rec.reason = "the node restarted while the job ran (attempt " +
                     std::to_string(rec.attempt) + "); no retries left";
        ++st.counts[js::lost];
      }
      log()->warn("recovery: job {} was running ({} orphaned processes killed) → {}", rec.id,
                  i < killed.size() ? killed[i] : 0, rec.status);
      batch.push_back(record_op(rec));
    }
    persist(
        self, std::move(batch), [finish, requeued]() mutable { finish(std::move(requeued)); },
        [self](caf::error& err) {
          log()->error("recovery could not be recorded: {}", caf::to_string(err));
          self->quit(err);
        });
  };
  std::vector<std::string> ids;
  std::vector<int64_t> pgids;
  for (auto& r : running) {
    ids.push_back(r.id);
    pgids.push_back(r.pgid);
  }
  self->request(st.janitor, janitor_timeout, kill_atom::value, std::move(ids), std::move(pgids))
      .then([reconcile](std::vector<uint64_t>& killed) mutable { reconcile(std::move(killed)); },
            [reconcile](caf::error& err) mutable {
              log()->error("recovery: orphaned processes not killed: {}", caf::to_string(err));
              reconcile({});
            });
}

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
    op = plan_event_trim(*st.ctx->env, now_ns(),
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

void on_job_down(self_ptr self, caf::down_msg& dm) {
  auto& st = self->state;
  auto i = std::find_if(st.running.begin(), st.running.end(),
                        [&](const auto& kv) { return kv.second.address() == dm.source; });
  if (i == st.running.end())
    return; // ended cleanly after reporting `done`
  auto id = i->first;
  st.running.erase(i);
  --st.counts[js::running];
  auto reason = caf::to_string(dm.reason);
  log()->error("job actor of {} crashed ({}); failing the job", id, reason);
  auto rec = persistence::get_job(*st.ctx->env, id);
  if (!rec) {
    try_start(self);
    return;
  }
  // Its processes go first (the janitor scans /proc), then the record.
  st.ending.insert(id);
  auto end = [self, rec = *rec, id, reason] {
    end_without_actor(self, rec, js::failed, "job actor crashed: " + reason, [self, id] {
      finish_cancels(self, id, js::failed);
      try_start(self);
      maybe_done_shutting_down(self);
    });
  };
  self->request(st.janitor, janitor_timeout, kill_atom::value, std::vector<std::string>{id},
                std::vector<int64_t>{rec->pgid})
      .then([end](std::vector<uint64_t>&) { end(); },
            [end, id](caf::error& err) {
              log()->error("job {}: processes not killed: {}", id, caf::to_string(err));
              end();
            });
}

/// Does the controller's blocking chores on a thread of its own; ends with
/// the controller.
job_janitor_actor::behavior_type job_janitor(job_janitor_actor::pointer self,
                                             caf::actor controller) {
  self->monitor(controller);
  self->set_down_handler([self](caf::down_msg&) { self->quit(); });
  return {
      [](kill_atom, const std::vector<std::string>& ids, const std::vector<int64_t>& pgids)
          -> std::vector<uint64_t> { return kill_jobs_processes(ids, pgids); },
      [](caf::delete_atom, const std::vector<std::string>& dirs) -> uint64_t {
        uint64_t removed = 0;
        for (auto& d : dirs) {
          std::error_code ec;
          if (std::filesystem::remove_all(d, ec) > 0)
            ++removed;
          else if (ec)
            log()->warn("cannot remove workspace {}: {}", d, ec.message());
        }
        return removed;
      },
  };
}

} // namespace

size_t kill_job_processes(const std::string& id, int64_t pgid) {
  return kill_jobs_processes({id}, {pgid}).at(0);
}

std::vector<uint64_t> kill_jobs_processes(const std::vector<std::string>& ids,
                                          const std::vector<int64_t>& pgids) {
  std::vector<uint64_t> killed(ids.size(), 0);
  std::vector<bool> group_is_ours(ids.size(), false);
  std::map<std::string, size_t, std::less<>> index;
  for (size_t i = 0; i < ids.size(); ++i)
    index.emplace("TROUPE_JOB_ID=" + ids[i], i);
  std::unique_ptr<DIR, int (*)(DIR*)> proc{::opendir("/proc"), ::closedir};
  if (!proc)
    return killed;
  std::string var;
  while (auto* ent = ::readdir(proc.get())) {
    std::string pid = ent->d_name;
    if (pid.empty() || !std::all_of(pid.begin(), pid.end(), ::isdigit))
      continue;
    // Each process's environment is read once, whatever the number of jobs.
    std::ifstream in("/proc/" + pid + "/environ", std::ios::binary);
    std::optional<size_t> job;
    while (in && !job && std::getline(in, var, '\0'))
      if (auto i = index.find(var); i != index.end())
        job = i->second;
    if (!job)
      continue;
    auto p = static_cast<pid_t>(std::stol(pid));
    if (p == pgids[*job])
      group_is_ours[*job] = true;
    if (::kill(p, SIGKILL) == 0)
      ++killed[*job];
  }
  // The group leader may be gone while members live on; a group id is only
  // trusted when a process of this job proved it ours.
  for (size_t i = 0; i < ids.size(); ++i)
    if (group_is_ours[i] && process::signal_group(static_cast<pid_t>(pgids[i]), SIGKILL))
      ++killed[i];
  return killed;
}

job_controller_actor::behavior_type
job_controller(job_controller_actor::stateful_pointer<job_controller_state> self,
               std::shared_ptr<const job_env> ctx) {
  auto& st = self->state;
  st.ctx = ctx;
  st.slots = ctx->cfg.concurrency;
  self->set_down_handler([self](caf::down_msg& dm) { on_job_down(self, dm); });
  // Told to exit (escalation, restart): the processes of running jobs are
  // killed first, so nothing runs unsupervised; their records stay
  // `running` and the next start reconciles them.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    std::vector<std::string> ids;
    for (auto& [id, hdl] : self->state.running)
      ids.push_back(id);
    // The janitor does it after this controller is gone (it ends once its
    // mailbox, which holds this request first, sees the controller down).
    if (!ids.empty())
      caf::anon_send(self->state.janitor, kill_atom::value, ids,
                     std::vector<int64_t>(ids.size(), 0));
    self->quit(std::move(msg.reason));
  });
  auto me = caf::actor_cast<caf::actor>(self);
  st.janitor = ctx->detach_janitor ? self->spawn<caf::detached>(job_janitor, me)
                                   : self->spawn(job_janitor, me);
  // A previous controller's gauges must not be sampled while this one recovers.
  report_gauges(self);
  recover(self);
  self->delayed_send(self, ctx->cfg.sweep_interval, sweep_atom::value);
  return {
      [self](submit_atom, std::string& encoded) -> caf::result<std::string> {
        auto& st = self->state;
        if (st.shutting_down)
          return caf::make_error(ec::shutting_down, std::string{"the node is shutting down"});
        job_record rec;
        try {
          rec = persistence::decode_job(encoded);
        } catch (const std::exception& e) {
          return caf::make_error(ec::invalid_argument, std::string{e.what()});
        }
        rec.status = js::queued;
        rec.node = st.ctx->node_name;
        if (rec.queued_at == 0)
          rec.queued_at = now_ns();
        auto rp = self->make_response_promise<std::string>();
        persist(
            self, write_batch{record_op(rec)},
            [self, rec, rp]() mutable {
              auto& st = self->state;
              ++st.counts[js::queued];
              enqueue(self, rec);
              publish(self, "job.queued", rec.id,
                      {{"status", js::queued}, {"priority", rec.priority}, {"name", rec.name}});
              rp.deliver(rec.id);
              try_start(self);
            },
            [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](cancel_atom, const std::string& id) -> caf::result<std::string> {
        auto& st = self->state;
        if (auto r = st.running.find(id); r != st.running.end()) {
          auto rp = self->make_response_promise<std::string>();
          st.cancels[id].push_back(rp);
          self->request(r->second, store_timeout, cancel_atom::value)
              .then([](ok_atom) {}, [](caf::error&) {});
          return rp;
        }
        bool queued = st.queued_index.count(id) > 0;
        bool waiting = st.backing_off.count(id) > 0;
        auto rec = persistence::get_job(*st.ctx->env, id);
        if (!rec)
          return caf::make_error(ec::not_found, "no job " + id);
        if (!queued && !waiting)
          return rec->status; // already ended: nothing to do
        if (queued) {
          st.queue.erase(st.queued_index.at(id));
          st.queued_index.erase(id);
          st.queued_since.erase(id);
        }
        st.backing_off.erase(id);
        report_gauges(self);
        --st.counts[js::queued];
        auto rp = self->make_response_promise<std::string>();
        auto original = *rec;
        end_without_actor(
            self, *rec, js::cancelled, "cancelled while queued",
            [rp]() mutable { rp.deliver(std::string{js::cancelled}); },
            [self, rp, original](caf::error& err) mutable {
              // Not recorded: the job is still queued, in the store and here.
              ++self->state.counts[js::queued];
              enqueue(self, original);
              try_start(self);
              rp.deliver(err);
            });
        return rp;
      },
      [self](subscribe_atom, const std::string& id,
             job_subscriber_actor& sub) -> caf::result<uint64_t> {
        auto& st = self->state;
        if (auto r = st.running.find(id); r != st.running.end()) {
          st.subscribers[id].push_back(sub);
          return self->delegate(r->second, subscribe_atom::value, std::move(sub));
        }
        if (st.queued_index.count(id) > 0 || st.backing_off.count(id) > 0 ||
            st.ending.count(id) > 0) {
          st.subscribers[id].push_back(std::move(sub));
          return persistence::last_log_seq(*st.ctx->env, id);
        }
        return caf::make_error(ec::not_found, "job " + id + " is not queued or running");
      },
      [self](status_atom) { return status_of(self->state); },
      [self](started_atom, const std::string& id) {
        publish(self, "job.started", id, {{"status", js::running}});
      },
      [self](done_atom, const std::string& id, const std::string& status, bool requeued,
             std::vector<job_subscriber_actor>& subs) {
        auto& st = self->state;
        st.running.erase(id);
        --st.counts[js::running];
        if (auto r = st.started_since.find(id); r != st.started_since.end()) {
          if (auto fam = metrics::find_family("jobs.run.duration"))
            report_metrics(
                self->system(),
                {histogram_delta(*fam, {}, seconds_between(r->second, self->clock().now()),
                                 st.ctx->metrics_accuracy)});
          st.started_since.erase(r);
        }
        if (requeued) {
          ++st.counts[js::queued];
          st.subscribers[id] = std::move(subs);
          auto rec = persistence::get_job(*st.ctx->env, id);
          auto delay = rec ? std::max<int64_t>(0, rec->not_before - now_ns()) : 0;
          st.backing_off.insert(id);
          self->delayed_send(self, std::chrono::nanoseconds(delay), requeue_atom::value, id);
          publish(self, "job.retrying", id,
                  {{"status", js::queued},
                   {"attempt", rec ? rec->attempt : 0},
                   {"reason", rec ? rec->reason : ""}});
        } else {
          ++st.counts[status];
          st.subscribers.erase(id);
          publish(self, "job." + status, id, {{"status", status}});
        }
        finish_cancels(self, id, status);
        try_start(self);
        maybe_done_shutting_down(self);
      },
      [self](requeue_atom, const std::string& id) {
        auto& st = self->state;
        if (st.backing_off.erase(id) == 0)
          return; // cancelled meanwhile
        if (auto rec = persistence::get_job(*st.ctx->env, id); rec && rec->status == js::queued)
          enqueue(self, *rec);
        try_start(self);
      },
      [self](sweep_atom) { sweep(self); },
      [self](sweep_atom, const std::string& from) { sweep_step(self, from); },
      [self](shutdown_atom) -> caf::result<ok_atom> {
        auto& st = self->state;
        st.shutting_down = true;
        if (st.running.empty())
          return ok_atom::value;
        auto rp = self->make_response_promise<ok_atom>();
        st.shutdown_waiters.push_back(rp);
        for (auto& [id, hdl] : st.running)
          self->request(hdl, store_timeout, shutdown_atom::value)
              .then([](ok_atom) {}, [](caf::error&) {});
        return rp;
      },
  };
}

} // namespace troupe
