#pragma once

// JSON text written by hand on hot paths (log lines, API pages, push bodies).

#include <string>
#include <string_view>

namespace troupe {

/// Appends `s` as a JSON string (with quotes). Control characters are escaped
/// and invalid UTF-8 is replaced with U+FFFD, as nlohmann's `replace` does.
void append_json_string(std::string& out, std::string_view s);

} // namespace troupe
