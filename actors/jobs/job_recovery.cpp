#include "actors/jobs/job_recovery.hpp"

#include "actors/jobs/job_queue.hpp"
#include "runtime/ground/clock.hpp"

namespace troupe::job_control {

namespace js = persistence::job_status;
using persistence::job_record;

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

} // namespace troupe::job_control
