#include "runtime/ground/launch.hpp"

#include <exception>
#include <utility>

namespace troupe::process {

void launch(io& io, launch_request req, std::function<void(launched)> done) {
  io.post_blocking([&io, req = std::move(req), done = std::move(done)]() mutable {
    launched r;
    try {
      if (req.before)
        req.before(r);
      if (r.error.empty()) {
        auto c = spawn(req.opts);
        r.pid = c.pid;
        r.watch = io.prepare(c, req.max_line, std::move(req.cb));
      }
    } catch (const std::exception& e) {
      r.error = std::string{"cannot start: "} + e.what();
    }
    auto w = r.watch;
    done(std::move(r));
    if (w)
      w->begin();
  });
}

} // namespace troupe::process
