#include "actors/core/http_bridge.hpp"

#include <caf/typed_event_based_actor.hpp>

#include "runtime/ground/logging.hpp"

namespace troupe {

http_bridge_actor::behavior_type http_bridge(http_bridge_actor::pointer self) {
  return {
      [self](bridge_task& task) {
        logging::request_scope scope{task.request_id};
        try {
          task.run(self);
        } catch (const std::exception& e) {
          // A failing task must not take the bridge down with it; the task's
          // exchange answers 500 when it is dropped unanswered.
          logging::get("http")->error("bridge task failed: {}", e.what());
        }
      },
  };
}

} // namespace troupe
