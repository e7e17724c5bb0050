#pragma once

// The one mapping from what an actor answered (troupe's ec codes, CAF's own
// errors) to what the HTTP API answers.

#include <string>

#include <caf/fwd.hpp>

#include "http/router.hpp"

namespace troupe {

/// An error as the API shows it: `{"error":{"code","message"}}` with `status`.
struct api_error {
  unsigned status = 500;
  std::string code;
  std::string message;
};

/// What a CAF error (request timeout, callee gone, …) means for a route. Routes
/// disagreed before there was one mapping; each keeps its answer (README: HTTP API).
enum class system_errors {
  internal,    ///< 500 `internal` (the job routes)
  unavailable, ///< 503 `unavailable`: try again (the metrics routes)
};

/// Maps an error: troupe's `shutting_down` and `unavailable` to 503 under their
/// own names, `not_found` to 404, `invalid_argument` to 400 `invalid_request`,
/// any other troupe code to 500 `internal`; an error of another category (CAF's)
/// as `system` says; "no error" (nothing to map) as 500 `internal`. The message is
/// the error rendered (`troupe::not_found: …`).
api_error to_api_error(const caf::error& err, system_errors system = system_errors::internal);

/// The response for `e`.
http::response to_response(const api_error& e);

} // namespace troupe
