#pragma once

// multipart/form-data request bodies (RFC 7578), parsed in place: parts are
// views into the body, which may be a file mapped into memory (uploads are
// streamed to disk), so an archive is never copied.

#include <cstddef>
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
  /// The part's bytes, exactly as sent: a view into the parsed body, valid
  /// as long as the body is.
  std::string_view data;
};

/// Splits `body` into its parts. `content_type_header` is the request's
/// Content-Type (it carries the boundary). Throws std::invalid_argument with a
/// message fit for the client when the body or header is malformed.
std::vector<form_part> parse_multipart(std::string_view content_type_header, std::string_view body);

/// The first part named `name`, or nullptr.
const form_part* find_part(const std::vector<form_part>& parts, std::string_view name);

/// A file mapped read-only into memory (an upload the server streamed to
/// disk): its bytes are paged in from the file as they are read, never
/// copied, and stay valid while this object lives, also after the file is
/// removed.
class mapped_file {
public:
  /// Throws std::system_error naming `path` when it cannot be opened or mapped.
  explicit mapped_file(const std::string& path);
  ~mapped_file();
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;

  std::string_view bytes() const { return {static_cast<const char*>(addr_), size_}; }

private:
  void* addr_ = nullptr;
  size_t size_ = 0;
};

} // namespace troupe::http
