#include "runtime/ground/role.hpp"

namespace troupe {

const char* to_string(role r) {
  switch (r) {
  case role::none:
    return "none";
  case role::read:
    return "read";
  case role::submit:
    return "submit";
  case role::admin:
    return "admin";
  }
  return "none";
}

std::optional<role> parse_role(std::string_view name) {
  for (auto r : {role::none, role::read, role::submit, role::admin})
    if (name == to_string(r))
      return r;
  return std::nullopt;
}

} // namespace troupe
