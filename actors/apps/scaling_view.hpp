#pragma once

// A scaling decision as users see it, one rendering for GET
// /apps/{name}/scaling and the app.scaled / app.scale_held events (issue 14's
// record): {ts (s), metric, window, observed, target, proposal, from, to,
// rule, reason}; a change by the API or the lifecycle has rule `manual` and
// no metric.

#include <nlohmann/json.hpp>

#include "persistence/records.hpp"

namespace troupe {

nlohmann::json scaling_json(const persistence::scaling_decision& d);

} // namespace troupe
