#include "http/api/query_params.hpp"

#include <algorithm>
#include <charconv>

#include "runtime/ground/clock.hpp"

namespace troupe {

namespace {

std::optional<uint64_t> parse_uint(const std::string& raw) {
  uint64_t value = 0;
  auto end = raw.data() + raw.size();
  auto [ptr, err] = std::from_chars(raw.data(), end, value);
  if (err != std::errc{} || ptr != end)
    return std::nullopt;
  return value;
}

} // namespace

void query_params::bad(const std::string& name, const std::string& what, const std::string& raw) {
  if (error_)
    return; // the first bad parameter is the one named
  error_ = http::response::error(400, "invalid_parameter",
                                 name + " must be " + what + ", got \"" + raw + "\"", name);
}

uint64_t query_params::uint(const std::string& name, uint64_t fallback, uint64_t min,
                            uint64_t max) {
  auto raw = req_.param(name);
  if (!raw)
    return fallback;
  auto value = parse_uint(*raw);
  if (!value || *value < min || *value > max) {
    bad(name, "an integer between " + std::to_string(min) + " and " + std::to_string(max), *raw);
    return fallback;
  }
  return *value;
}

std::optional<int64_t> query_params::time(const std::string& name) {
  auto raw = req_.param(name);
  if (!raw)
    return std::nullopt;
  auto t = parse_time(*raw);
  if (!t)
    bad(name, "an RFC 3339 time or Unix seconds", *raw);
  return t;
}

std::optional<std::string> query_params::one_of(const std::string& name,
                                                const std::vector<std::string>& choices) {
  auto raw = req_.param(name);
  if (!raw || std::find(choices.begin(), choices.end(), *raw) != choices.end())
    return raw;
  std::string list;
  for (auto& c : choices)
    list += (list.empty() ? "" : ", ") + c;
  bad(name, "one of " + list, *raw);
  return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> query_params::key_values(const std::string& name) {
  std::vector<std::pair<std::string, std::string>> out;
  auto raw = req_.param(name);
  if (!raw)
    return out;
  std::string_view rest = *raw;
  for (;;) {
    auto item = rest.substr(0, rest.find(','));
    auto colon = item.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      bad(name, "key:value pairs, comma-separated", *raw);
      return {};
    }
    out.emplace_back(item.substr(0, colon), item.substr(colon + 1));
    if (item.size() == rest.size())
      return out;
    rest.remove_prefix(item.size() + 1);
  }
}

bool query_params::flag(const std::string& name, bool fallback) {
  auto raw = req_.param(name);
  if (!raw)
    return fallback;
  if (*raw == "true" || *raw == "1")
    return true;
  if (*raw == "false" || *raw == "0")
    return false;
  bad(name, "true or false", *raw);
  return fallback;
}

std::optional<uint64_t> query_params::last_event_id(const std::string& query_name) {
  std::string name = "Last-Event-ID";
  std::optional<std::string> raw;
  if (auto& header = req_.header("last-event-id"); !header.empty())
    raw = header;
  else if (!query_name.empty() && (raw = req_.param(query_name)))
    name = query_name;
  if (!raw)
    return std::nullopt;
  auto value = parse_uint(*raw);
  if (!value)
    bad(name, "a sequence number (the id of the last event received)", *raw);
  return value;
}

bool query_params::reply_if_bad(const http::exchange_ptr& ex) const {
  if (!error_)
    return false;
  ex->reply(*error_);
  return true;
}

} // namespace troupe
