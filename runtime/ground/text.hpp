#pragma once

// ASCII helpers for protocol tokens (header names, schemes, media types,
// level names): case and whitespace, locale-independent, one copy for the
// whole tree.

#include <algorithm>
#include <string>
#include <string_view>

namespace troupe {

inline char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

inline void ascii_lower_in_place(std::string& s) {
  for (auto& c : s)
    c = ascii_lower(c);
}

inline std::string ascii_lower(std::string_view s) {
  std::string out{s};
  ascii_lower_in_place(out);
  return out;
}

/// Equal but for ASCII case.
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return ascii_lower(x) == ascii_lower(y);
         });
}

/// `s` without leading and trailing spaces and tabs (HTTP's optional
/// whitespace around header values and list elements).
inline std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

} // namespace troupe
