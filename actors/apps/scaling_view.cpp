#include "actors/apps/scaling_view.hpp"

namespace troupe {

nlohmann::json scaling_json(const persistence::scaling_decision& d) {
  using nlohmann::json;
  auto by_rule = !d.rule.empty();
  return json{{"ts", static_cast<double>(d.ts_ns) / 1e9},
              {"metric", by_rule ? json(d.metric) : json(nullptr)},
              {"window", by_rule ? json(d.window) : json(nullptr)},
              {"observed", by_rule ? json(d.observed) : json(nullptr)},
              {"target", by_rule ? json(d.target) : json(nullptr)},
              {"proposal", by_rule ? d.proposal : d.to},
              {"from", d.from},
              {"to", d.to},
              {"rule", by_rule ? d.rule : std::string{"manual"}},
              {"reason", d.reason}};
}

} // namespace troupe
