#pragma once

// The body of a page of a list, one shape for every list route:
// `{"<items>":[…],"<next>":<where the next page starts>}`.

#include <string>
#include <string_view>
#include <vector>

namespace troupe {

/// Renders `items` (each with `render(item)`, JSON text) under `items_key`, and
/// `next_json` (JSON text: a number, a string or null) under `next_key`.
template <class T, class Render>
std::string page_body(std::string_view items_key, const std::vector<T>& items, Render render,
                      std::string_view next_key, std::string_view next_json) {
  std::string body = "{\"";
  body += items_key;
  body += "\":[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0)
      body += ',';
    body += render(items[i]);
  }
  body += "],\"";
  body += next_key;
  body += "\":";
  body += next_json;
  body += '}';
  return body;
}

} // namespace troupe
