#include "runtime/ground/json_text.hpp"

#include "runtime/ground/logging.hpp"

namespace troupe {

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  logging::append_json_escaped(out, s);
  out += '"';
}

} // namespace troupe
