#include "actors/jobs/job_queue.hpp"

#include "actors/jobs/job_gauges.hpp"

namespace troupe::job_control {

namespace js = persistence::job_status;

void enqueue(self_ptr self, const persistence::job_record& r) {
  auto& st = self->state;
  st.queued_since.emplace(r.id, self->clock().now());
  job_controller_state::entry e{r.priority, st.next_order++, r.id, {}};
  for (auto& [k, v] : r.labels) {
    e.labels.push_back(k + '=' + v);
    ++st.queued_labels[e.labels.back()];
  }
  st.queue.insert(e);
  st.queued_index.emplace(r.id, std::move(e));
}

void dequeue(job_controller_state& st, const job_controller_state::entry& e) {
  for (auto& l : e.labels)
    if (auto i = st.queued_labels.find(l); i != st.queued_labels.end() && --i->second == 0)
      st.queued_labels.erase(i);
  auto id = e.id; // `e` may be the index's own entry
  st.queue.erase(e);
  st.queued_index.erase(id);
}

void try_start(self_ptr self) {
  auto& st = self->state;
  if (st.recovering || st.shutting_down) {
    report_gauges(self); // jobs still end meanwhile
    return;
  }
  while (static_cast<int>(st.running.size()) < st.slots && !st.queue.empty()) {
    auto e = *st.queue.begin();
    dequeue(st, e);
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
    observe_start(self, e.id);
  }
  report_gauges(self);
}

} // namespace troupe::job_control
