#include "actors/jobs/job_controller.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/event_bus.hpp"
#include "actors/core/names.hpp"
#include "actors/core/retrying_request.hpp"
#include "actors/core/status.hpp"
#include "actors/jobs/job_controller_parts.hpp"
#include "actors/jobs/job_gauges.hpp"
#include "actors/jobs/job_queue.hpp"
#include "actors/jobs/job_recovery.hpp"
#include "actors/jobs/job_retention.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"

// The controller's behaviour: it wires its parts (job_queue, job_recovery,
// job_retention, job_gauges, job_janitor) to its messages, and ends jobs.

namespace troupe {

namespace job_control {

namespace js = persistence::job_status;

std::shared_ptr<spdlog::logger> log() {
  return logging::get("jobs");
}

namespace {

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
    caf::put(counts, std::string{s}, i != st.counts.end() ? i->second : 0);
  }
  caf::put(x.fields, "counts", std::move(counts));
  return x;
}

} // namespace

void publish(self_ptr self, const std::string& type, const std::string& id, nlohmann::json extra) {
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

void persist(self_ptr self, write_batch batch, std::function<void()> then,
             std::function<void(caf::error&)> failed) {
  write_to_store(self, no_retry, nullptr, std::move(batch), std::move(then),
                 [failed](caf::error err) { failed(err); });
}

write_op record_op(const persistence::job_record& r) {
  return write_op{write_op::put, "jobs", r.id, persistence::encode(r)};
}

namespace {

using persistence::job_record;

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

} // namespace

} // namespace job_control

job_controller_actor::behavior_type
job_controller(job_controller_actor::stateful_pointer<job_controller_state> self,
               std::shared_ptr<const job_env> ctx) {
  using namespace job_control;
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
          dequeue(st, st.queued_index.at(id));
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
        observe_end(self, id);
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
      [self](count_atom, const std::string& label) -> uint64_t {
        auto& m = self->state.queued_labels;
        auto i = m.find(label);
        return i == m.end() ? 0 : i->second;
      },
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
