#pragma once

// Who may do what: the roles API tokens grant. Here, below config and the
// HTTP layer, because both read role names.

#include <cstdint>
#include <optional>
#include <string_view>

namespace troupe {

/// Roles in increasing power; `none` marks a public route (no token needed).
enum class role : uint8_t { none = 0, read = 1, submit = 2, admin = 3 };

/// "none", "read", "submit", "admin".
const char* to_string(role r);

/// Parses a role name (exact, lower case); nullopt if unknown.
std::optional<role> parse_role(std::string_view name);

/// True if `granted` is at least `needed`.
inline bool allows(role granted, role needed) {
  return static_cast<uint8_t>(granted) >= static_cast<uint8_t>(needed);
}

} // namespace troupe
