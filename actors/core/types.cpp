#include "actors/interfaces.hpp"

#include <caf/actor_system_config.hpp>

namespace troupe {

const char* to_string(ec x) {
  switch (x) {
  case ec::none:
    return "none";
  case ec::unspecified:
    return "unspecified";
  case ec::invalid_argument:
    return "invalid_argument";
  case ec::not_found:
    return "not_found";
  case ec::store_failure:
    return "store_failure";
  case ec::schema_too_new:
    return "schema_too_new";
  case ec::unavailable:
    return "unavailable";
  case ec::restart_intensity:
    return "restart_intensity";
  case ec::shutting_down:
    return "shutting_down";
  }
  return "unknown";
}

void add_troupe_types(caf::actor_system_config& cfg) {
  cfg.add_message_types<caf::id_block::troupe>();
  cfg.add_error_category(caf::atom("troupe"),
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           std::string result = "troupe::";
                           result += to_string(static_cast<ec>(code));
                           if (!ctx.empty() && ctx.match_element<std::string>(0)) {
                             result += ": ";
                             result += ctx.get_as<std::string>(0);
                           }
                           return result;
                         });
}

} // namespace troupe
