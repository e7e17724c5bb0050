#include "actors/core/status.hpp"

#include <caf/config_value.hpp>
#include <caf/deep_to_string.hpp>
#include <caf/uri.hpp>

namespace troupe {

namespace {

struct to_json_visitor {
  nlohmann::json operator()(const caf::config_value::integer& x) const { return x; }
  nlohmann::json operator()(const caf::config_value::boolean& x) const { return x; }
  nlohmann::json operator()(const caf::config_value::real& x) const { return x; }
  nlohmann::json operator()(const caf::config_value::string& x) const { return x; }
  nlohmann::json operator()(const caf::config_value::list& xs) const {
    auto out = nlohmann::json::array();
    for (auto& x : xs)
      out.push_back(status_json(x));
    return out;
  }
  nlohmann::json operator()(const caf::config_value::dictionary& xs) const {
    auto out = nlohmann::json::object();
    for (auto& [key, value] : xs)
      out[key] = status_json(value);
    return out;
  }
  template <class T> nlohmann::json operator()(const T& x) const { return caf::deep_to_string(x); }
};

} // namespace

nlohmann::json status_json(const caf::config_value& x) {
  return caf::visit(to_json_visitor{}, x.get_data());
}

nlohmann::json status_json(const component_status& x) {
  return to_json_visitor{}(x.fields);
}

} // namespace troupe
