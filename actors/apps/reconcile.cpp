#include "actors/apps/reconcile.hpp"

#include <algorithm>

namespace troupe {

namespace {

/// Unready before ready; among equals the newest first.
bool leaves_first(const reconcile_view* a, const reconcile_view* b) {
  if (a->ready != b->ready)
    return !a->ready;
  return a->started_at > b->started_at;
}

} // namespace

reconcile_plan plan_reconcile(uint32_t desired, uint32_t revision,
                              const std::vector<reconcile_view>& instances) {
  reconcile_plan plan;
  std::vector<const reconcile_view*> current;
  std::vector<const reconcile_view*> old;
  uint32_t ready = 0;
  bool current_pending = false;
  for (auto& x : instances) {
    if (x.leaving)
      continue;
    (x.revision == revision ? current : old).push_back(&x);
    if (x.ready)
      ++ready;
    else if (x.revision == revision)
      current_pending = true;
  }
  auto active = static_cast<uint32_t>(current.size() + old.size());
  if (active < desired)
    plan.start = desired - active;
  else if (!old.empty() && !current_pending && active == desired)
    plan.start = 1; // the surge of a rolling replace
  // While old instances remain, only they leave (the new ones are the goal).
  auto& candidates = old.empty() ? current : old;
  std::sort(candidates.begin(), candidates.end(), leaves_first);
  auto excess = active > desired ? active - desired : 0;
  for (auto* x : candidates) {
    if (excess == 0)
      break;
    if (x->ready) {
      if (ready <= desired)
        break; // draining it would leave fewer ready than desired
      --ready;
    }
    plan.drain.push_back(x->id);
    --excess;
  }
  return plan;
}

} // namespace troupe
