#pragma once

// What an app actor does next to bring its instances to the desired count
// and revision: pure, so scale out/in and the rolling replace are tested
// without actors or processes.
//
// Rolling replace: one new instance at a time beyond the desired count (a
// surge of one); an old one drains only once the ready instances exceed the
// desired count, so there are never fewer ready than desired. Unready
// instances go first: draining one costs no ready capacity.

#include <cstdint>
#include <string>
#include <vector>

namespace troupe {

/// An instance as the reconciler sees it.
struct reconcile_view {
  std::string id;
  uint32_t revision = 0;
  bool ready = false;
  /// Draining or stopping: already on its way out, counts for nothing.
  bool leaving = false;
  /// Started at (any monotonic order; newer instances leave first on scale-in).
  int64_t started_at = 0;
};

struct reconcile_plan {
  /// New instances to start (at the desired revision).
  uint32_t start = 0;
  /// Instances to drain, in this order.
  std::vector<std::string> drain;
};

/// The next step toward `desired` instances of `revision`.
reconcile_plan plan_reconcile(uint32_t desired, uint32_t revision,
                              const std::vector<reconcile_view>& instances);

} // namespace troupe
