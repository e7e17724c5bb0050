#include "runtime/ground/log_level.hpp"

#include <cctype>
#include <functional>
#include <map>
#include <optional>

#include "runtime/ground/text.hpp"
#include <nlohmann/json.hpp>

namespace troupe {

namespace {

using json = nlohmann::json;

/// Captures the top-level `level`/`severity` strings while validating the line.
struct level_finder : nlohmann::json_sax<json> {
  int depth = 0;
  std::string last_key;
  std::optional<std::string> level, severity;

  bool string(string_t& value) override {
    if (depth != 1)
      return true;
    if (last_key == "level" && !level)
      level = value;
    else if (last_key == "severity" && !severity)
      severity = value;
    return true;
  }
  bool key(string_t& value) override {
    if (depth == 1)
      last_key = value;
    return true;
  }
  bool start_object(std::size_t) override { return ++depth, true; }
  bool end_object() override { return --depth, true; }
  bool start_array(std::size_t) override { return ++depth, true; }
  bool end_array() override { return --depth, true; }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }
};

std::optional<std::string> json_level(std::string_view line) {
  auto first = line.find_first_not_of(" \t\r\n");
  auto last = line.find_last_not_of(" \t\r\n");
  if (first == std::string_view::npos || line[first] != '{' || line[last] != '}')
    return std::nullopt;
  level_finder finder;
  if (!json::sax_parse(line.substr(first, last - first + 1), &finder))
    return std::nullopt;
  auto& found = finder.level ? finder.level : finder.severity;
  if (!found || found->empty())
    return std::nullopt;
  return found;
}

std::string normalise_level(std::string level) {
  ascii_lower_in_place(level);
  static const std::map<std::string, std::string, std::less<>> aliases{
      {"warning", "warn"},  {"err", "error"},        {"fatal", "critical"},
      {"crit", "critical"}, {"information", "info"},
  };
  auto it = aliases.find(level);
  return it == aliases.end() ? level : it->second;
}

} // namespace

std::string detect_level(std::string_view line, bool is_stderr, std::string_view stdout_level,
                         std::string_view stderr_level) {
  if (auto level = json_level(line))
    return normalise_level(std::move(*level));
  return std::string{is_stderr ? stderr_level : stdout_level};
}

} // namespace troupe
