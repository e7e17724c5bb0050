#include "http/api/api_error.hpp"

#include <caf/atom.hpp>
#include <caf/error.hpp>

#include "actors/interfaces.hpp"

namespace troupe {

namespace {

api_error from_troupe_code(ec code, std::string message) {
  switch (code) {
  case ec::shutting_down:
  case ec::unavailable:
    return {503, to_string(code), std::move(message)};
  case ec::not_found:
    return {404, "not_found", std::move(message)};
  case ec::invalid_argument:
    return {400, "invalid_request", std::move(message)};
  case ec::none:
  case ec::unspecified:
  case ec::store_failure:
  case ec::schema_too_new:
  case ec::restart_intensity:
    break; // nothing the caller can change: the node's fault
  }
  return {500, "internal", std::move(message)};
}

} // namespace

api_error to_api_error(const caf::error& err, system_errors system) {
  auto message = caf::to_string(err);
  if (!err) // "no error" has no category: a reply that should not have failed
    return {500, "internal", std::move(message)};
  if (err.category() == caf::atom("troupe"))
    return from_troupe_code(static_cast<ec>(err.code()), std::move(message));
  if (system == system_errors::unavailable)
    return {503, "unavailable", std::move(message)};
  return {500, "internal", std::move(message)};
}

http::response to_response(const api_error& e) {
  return http::response::error(e.status, e.code, e.message);
}

} // namespace troupe
