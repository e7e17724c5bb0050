#pragma once

// The one rendering of the `status` protocol's reply (component_status in
// actors/interfaces.hpp): what GET /readyz and the tools print.

#include <nlohmann/json.hpp>

#include "actors/interfaces.hpp"

namespace troupe {

/// The fields of a status as a JSON object (nested groups as objects, lists
/// as arrays). Name and health are the protocol's own: callers that show
/// them add them where their JSON has them.
nlohmann::json status_json(const component_status& x);

/// A config value as JSON (integers, booleans, reals, strings, lists and
/// dictionaries as such; atoms, timespans and URIs as their text).
nlohmann::json status_json(const caf::config_value& x);

} // namespace troupe
