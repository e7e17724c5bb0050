#pragma once

// Fan-in: ask several actors the same thing, act on each answer, and go on
// once all have answered or failed. The one shape behind an app's status
// (its instances), the app list (the apps) and a metrics scrape (the series).

#include <chrono>
#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include <caf/error.hpp>

namespace troupe {

/// Sends `xs...` to every handle in `targets` (a request with `timeout`),
/// calls `each(reply)` for every answer in arrival order, and `done(failed)`
/// once every request answered or failed (`failed`: how many did not
/// answer). With no targets `done(0)` runs at once. `each` and `done` run
/// in `self`'s context; they are copied once per target.
template <class Reply, class Self, class Handle, class Each, class Done, class... Ts>
void ask_all(Self self, const std::vector<Handle>& targets, std::chrono::milliseconds timeout,
             Each each, Done done, Ts... xs) {
  if (targets.empty()) {
    done(size_t{0});
    return;
  }
  struct progress {
    size_t left;
    size_t failed = 0;
    Done done;
  };
  auto prog = std::make_shared<progress>(progress{targets.size(), 0, std::move(done)});
  auto step = [prog] {
    if (--prog->left == 0)
      prog->done(prog->failed);
  };
  for (auto& hdl : targets)
    self->request(hdl, timeout, xs...)
        .then(
            [each, step](Reply& r) mutable {
              each(r);
              step();
            },
            [prog, step](caf::error&) {
              ++prog->failed;
              step();
            });
}

} // namespace troupe
