#include "actors/jobs/job_gauges.hpp"

#include "actors/metrics/metrics.hpp"
#include "runtime/ground/clock.hpp"

namespace troupe::job_control {

namespace {

double seconds_between(caf::actor_clock::time_point from, caf::actor_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

/// One observation of the histogram `family` (if it is known).
void observe(self_ptr self, const char* family, double seconds) {
  if (auto fam = metrics::find_family(family))
    report_metrics(self->system(),
                   {histogram_delta(*fam, {}, seconds, self->state.ctx->metrics_accuracy)});
}

} // namespace

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

void observe_start(self_ptr self, const std::string& id) {
  auto& st = self->state;
  auto now = self->clock().now();
  if (auto q = st.queued_since.find(id); q != st.queued_since.end()) {
    observe(self, "jobs.queue.wait", seconds_between(q->second, now));
    st.queued_since.erase(q);
  }
  st.started_since[id] = now;
}

void observe_end(self_ptr self, const std::string& id) {
  auto& st = self->state;
  if (auto r = st.started_since.find(id); r != st.started_since.end()) {
    observe(self, "jobs.run.duration", seconds_between(r->second, self->clock().now()));
    st.started_since.erase(r);
  }
}

} // namespace troupe::job_control
