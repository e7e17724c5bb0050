#pragma once

// multipart/form-data request bodies (RFC 7578), parsed from memory.

#include <string>
#include <string_view>
#include <vector>

namespace troupe::http {

/// One field of a form.
struct form_part {
  /// The `name` parameter of Content-Disposition.
  std::string name;
  /// The `filename` parameter; empty for plain fields.
  std::string filename;
  /// The part's Content-Type header as sent; empty if absent (RFC 7578 then
  /// means text/plain).
  std::string content_type;
  /// The part's bytes, exactly as sent.
  std::string data;
};

/// Splits `body` into its parts. `content_type_header` is the request's
/// Content-Type (it carries the boundary). Throws std::invalid_argument with a
/// message fit for the client when the body or header is malformed.
std::vector<form_part> parse_multipart(std::string_view content_type_header, std::string_view body);

/// The first part named `name`, or nullptr.
const form_part* find_part(const std::vector<form_part>& parts, std::string_view name);

} // namespace troupe::http
