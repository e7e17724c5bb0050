#include "runtime/ground/config.hpp"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>
#include <utility>

#include <cmath>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "runtime/ground/host.hpp"
#include "runtime/ground/role.hpp"
#include "runtime/ground/text.hpp"
#include "runtime/ground/url.hpp"

extern char** environ;

namespace troupe {

config_error::config_error(std::string path, std::string reason)
    : std::runtime_error("config error: " + path + ": " + reason), path_(std::move(path)),
      reason_(std::move(reason)) {}

namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

/// Why a value is unacceptable; empty when it is fine.
using problem = std::optional<std::string>;

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = KiB * 1024;
constexpr uint64_t GiB = MiB * 1024;

std::string in_quotes(std::string_view s) {
  return '"' + std::string{s} + '"';
}

bool is_space(char ch) {
  return std::isspace(static_cast<unsigned char>(ch)) != 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_space(s.back()))
    s.remove_suffix(1);
  return s;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

/// Splits "64MiB" into "64" and "MiB" (spaces between them allowed).
std::pair<std::string_view, std::string_view> split_number(std::string_view s) {
  size_t i = (!s.empty() && s[0] == '-') ? 1 : 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])))
    ++i;
  return {s.substr(0, i), trim(s.substr(i))};
}

/// A whole decimal number; `overflow` tells a too-long number from garbage.
template <class T> std::optional<T> parse_whole(std::string_view s, bool& overflow) {
  T value{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  overflow = ec == std::errc::result_out_of_range;
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size())
    return std::nullopt;
  return value;
}

std::string show_size(uint64_t v) {
  constexpr std::pair<uint64_t, const char*> units[] = {{GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}};
  for (auto [unit, name] : units)
    if (v != 0 && v % unit == 0)
      return std::to_string(v / unit) + name;
  return std::to_string(v);
}

std::string show_duration(milliseconds v) {
  constexpr std::pair<long long, const char*> units[] = {
      {86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1'000, "s"}};
  auto ms = static_cast<long long>(v.count());
  if (ms == 0)
    return "0s";
  for (auto [unit, name] : units)
    if (ms % unit == 0)
      return std::to_string(ms / unit) + name;
  return std::to_string(ms) + "ms";
}

// -- value kinds: parse raw text into a member, show a member --------------------

struct text_kind {
  problem parse(std::string_view raw, std::string& out) const {
    out = std::string{raw};
    return std::nullopt;
  }
  std::string show(const std::string& v) const { return v.empty() ? "\"\"" : v; }
};

/// auth.tokens: YAML sequences arrive as JSON text, the environment holds
/// JSON; errors name the element and never a token (parse_auth_tokens).
struct token_list_kind {
  problem parse(std::string_view raw, std::vector<auth_token>& out) const {
    out = parse_auth_tokens(raw, "auth.tokens");
    return std::nullopt;
  }
  std::string show(const std::vector<auth_token>& v) const {
    return v.empty() ? "[]" : "[" + std::to_string(v.size()) + " tokens, not shown]";
  }
};

struct choice_kind {
  std::vector<std::string> options;

  std::string joined() const {
    std::string out;
    for (auto& opt : options)
      out += (out.empty() ? "" : "|") + opt;
    return out;
  }
  problem parse(std::string_view raw, std::string& out) const {
    auto v = ascii_lower(trim(raw));
    if (std::find(options.begin(), options.end(), v) == options.end())
      return "expected one of " + joined() + ", got " + in_quotes(raw);
    out = v;
    return std::nullopt;
  }
  std::string show(const std::string& v) const { return v; }
};

struct int_kind {
  problem parse(std::string_view raw, int& out) const {
    bool overflow = false;
    auto v = parse_whole<int>(trim(raw), overflow);
    if (overflow)
      return "out of range, got " + in_quotes(raw);
    if (!v)
      return "expected an integer, got " + in_quotes(raw);
    out = *v;
    return std::nullopt;
  }
  std::string show(int v) const { return std::to_string(v); }
};

struct size_kind {
  problem parse(std::string_view raw, uint64_t& out) const {
    static const std::pair<std::string_view, uint64_t> units[] = {
        {"", 1},      {"b", 1},     {"kb", 1000}, {"mb", 1000'000}, {"gb", 1000'000'000},
        {"kib", KiB}, {"mib", MiB}, {"gib", GiB}};
    auto [digits, suffix] = split_number(trim(raw));
    auto unit = ascii_lower(suffix);
    auto u =
        std::find_if(std::begin(units), std::end(units), [&](auto& x) { return x.first == unit; });
    bool overflow = false;
    auto n = parse_whole<uint64_t>(digits, overflow);
    if (overflow || (n && u != std::end(units) && *n > UINT64_MAX / u->second))
      return "too large, got " + in_quotes(raw);
    if (!n || u == std::end(units))
      return "expected a size like 64MiB, 10MB or 1048576, got " + in_quotes(raw);
    out = *n * u->second;
    return std::nullopt;
  }
  std::string show(uint64_t v) const { return show_size(v); }
};

struct duration_kind {
  problem parse(std::string_view raw, milliseconds& out) const {
    static const std::pair<std::string_view, long long> units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}, {"d", 86'400'000}};
    auto [digits, suffix] = split_number(trim(raw));
    auto unit = ascii_lower(suffix);
    auto u =
        std::find_if(std::begin(units), std::end(units), [&](auto& x) { return x.first == unit; });
    bool overflow = false;
    auto n = parse_whole<long long>(digits, overflow);
    constexpr auto max = std::numeric_limits<long long>::max();
    if (overflow || (n && u != std::end(units) && (*n > max / u->second || *n < -max / u->second)))
      return "too large, got " + in_quotes(raw);
    if (!n || u == std::end(units))
      return "expected a duration like 15s or 100ms, got " + in_quotes(raw);
    out = milliseconds{*n * u->second};
    return std::nullopt;
  }
  std::string show(milliseconds v) const { return show_duration(v); }
};

struct bool_kind {
  problem parse(std::string_view raw, bool& out) const {
    auto v = ascii_lower(trim(raw));
    if (v == "true" || v == "yes" || v == "on" || v == "1")
      out = true;
    else if (v == "false" || v == "no" || v == "off" || v == "0")
      out = false;
    else
      return "expected true or false (or yes/no, on/off, 1/0), got " + in_quotes(raw);
    return std::nullopt;
  }
  std::string show(bool v) const { return v ? "true" : "false"; }
};

struct number_kind {
  problem parse(std::string_view raw, double& out) const {
    auto t = std::string{trim(raw)};
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(t.c_str(), &end);
    if (t.empty() || end != t.c_str() + t.size() || errno == ERANGE || !std::isfinite(v))
      return "expected a number like 0.01, got " + in_quotes(raw);
    out = v;
    return std::nullopt;
  }
  std::string show(double v) const {
    std::ostringstream out;
    out << v;
    return out.str();
  }
};

/// A JSON object (or empty). YAML mappings are converted to JSON text.
struct json_object_kind {
  problem parse(std::string_view raw, std::string& out) const {
    auto t = trim(raw);
    if (t.empty()) {
      out.clear();
      return std::nullopt;
    }
    if (!valid_json_object(t))
      return "expected a JSON object like {\"tenant\":\"t\"}, got " + in_quotes(raw);
    out = std::string{t};
    return std::nullopt;
  }
  std::string show(const std::string& v) const { return v.empty() ? "{}" : v; }
  static bool valid_json_object(std::string_view t);
};

/// A list of strings: comma-separated or a JSON array (YAML sequences are
/// converted); stored comma-separated.
struct list_kind {
  problem parse(std::string_view raw, std::string& out) const;
  std::string show(const std::string& v) const { return v.empty() ? "\"\"" : v; }
};

bool json_object_kind::valid_json_object(std::string_view t) {
  auto doc = nlohmann::json::parse(t, nullptr, false);
  return !doc.is_discarded() && doc.is_object();
}

problem list_kind::parse(std::string_view raw, std::string& out) const {
  auto t = trim(raw);
  std::vector<std::string> items;
  if (!t.empty() && t.front() == '[') {
    auto doc = nlohmann::json::parse(t, nullptr, false);
    if (doc.is_discarded() || !doc.is_array())
      return "expected a JSON array of strings or a comma-separated list, got " + in_quotes(raw);
    for (auto& item : doc) {
      if (!item.is_string())
        return "expected strings in the list, got " + item.dump();
      items.push_back(item.get<std::string>());
    }
  } else {
    std::string_view rest = t;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      auto item = trim(rest.substr(0, comma));
      if (!item.empty())
        items.emplace_back(item);
      if (comma == std::string_view::npos)
        break;
      rest.remove_prefix(comma + 1);
    }
  }
  out.clear();
  for (auto& item : items) {
    if (item.find(',') != std::string::npos)
      return "list items must not contain commas, got " + in_quotes(item);
    out += (out.empty() ? "" : ",") + item;
  }
  return std::nullopt;
}

// -- checks of final values -------------------------------------------------------

problem non_empty(const std::string& v, const config&) {
  if (v.empty())
    return "must not be empty";
  return std::nullopt;
}

/// Splits `HOST:PORT` or `[IPV6]:PORT`.
problem split_listen(const std::string& s, std::string* host, uint16_t* port) {
  auto bad = [&] { return "expected HOST:PORT like 127.0.0.1:8000, got " + in_quotes(s); };
  std::string h;
  std::string_view p;
  if (starts_with(s, "[")) {
    auto close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return "expected [IPV6]:PORT like [::1]:8000, got " + in_quotes(s);
    h = s.substr(1, close - 1);
    p = std::string_view{s}.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string::npos)
      return bad();
    h = s.substr(0, colon);
    p = std::string_view{s}.substr(colon + 1);
    if (h.find(':') != std::string::npos)
      return "an IPv6 host needs brackets, like [::1]:8000, got " + in_quotes(s);
  }
  if (h.empty())
    return "host must not be empty, got " + in_quotes(s);
  if (std::any_of(h.begin(), h.end(), is_space))
    return "host must not contain spaces, got " + in_quotes(s);
  bool overflow = false;
  auto n = parse_whole<unsigned>(p, overflow);
  if (!n || *n > 65535)
    return "port must be a number from 0 to 65535, got " + in_quotes(s);
  if (host)
    *host = h;
  if (port)
    *port = static_cast<uint16_t>(*n);
  return std::nullopt;
}

problem valid_listen(const std::string& v, const config&) {
  return split_listen(v, nullptr, nullptr);
}

problem optional_listen(const std::string& v, const config& c) {
  return v.empty() ? std::nullopt : valid_listen(v, c);
}

/// A duration's lower bound, as shown by --help and as checked.
struct duration_floor {
  std::string shown;
  std::function<problem(milliseconds, const config&)> check;
};

duration_floor above(milliseconds floor) {
  return {"> " + show_duration(floor), [floor](milliseconds v, const config&) -> problem {
            if (v > floor)
              return std::nullopt;
            return "must be > " + show_duration(floor) + ", got " + show_duration(v);
          }};
}

duration_floor at_least(milliseconds floor) {
  return {">= " + show_duration(floor), [floor](milliseconds v, const config&) -> problem {
            if (v >= floor)
              return std::nullopt;
            return "must be >= " + show_duration(floor) + ", got " + show_duration(v);
          }};
}

// -- the schema -------------------------------------------------------------------

/// One configuration key: parses raw text into `config`, checks and shows it.
struct field {
  std::string path;
  std::string type;
  std::string help;
  /// Where a machine-dependent default comes from, e.g. "host name".
  std::string default_note;
  std::function<problem(config&, std::string_view)> set;
  std::function<problem(const config&)> check;
  std::function<std::string(const config&)> show;
};

/// Binds a top-level member; works on `config&` and `const config&` alike.
template <class T> auto at(T config::*member) {
  return [member](auto& c) -> decltype(auto) { return c.*member; };
}

/// Binds a member of a section.
template <class S, class T> auto at(S config::*section, T S::*member) {
  return [section, member](auto& c) -> decltype(auto) { return (c.*section).*member; };
}

/// Binds a member of a nested section (logs.loki.url).
template <class S, class N, class T> auto at(S config::*section, N S::*sub, T N::*member) {
  return [section, sub, member](auto& c) -> decltype(auto) { return ((c.*section).*sub).*member; };
}

template <class Kind, class Ref, class Check>
field make_field(std::string path, std::string type, Kind kind, Ref ref, Check check,
                 std::string help) {
  field f{std::move(path), std::move(type), std::move(help), {}, {}, {}, {}};
  f.set = [kind, ref](config& c, std::string_view raw) { return kind.parse(raw, ref(c)); };
  f.check = [ref, check](const config& c) -> problem { return check(ref(c), c); };
  f.show = [kind, ref](const config& c) { return kind.show(ref(c)); };
  return f;
}

template <class Ref> field text(std::string path, Ref ref, std::string help) {
  return make_field(std::move(path), "string", text_kind{}, ref, non_empty, std::move(help));
}

/// A string that may be empty (optional settings such as logs.loki.url).
template <class Ref> field optional_text(std::string path, Ref ref, std::string help) {
  auto any = [](const std::string&, const config&) -> problem { return std::nullopt; };
  return make_field(std::move(path), "string", text_kind{}, ref, any, std::move(help));
}

/// Values whose rules live above the ground floor (token table, metric
/// naming, Prometheus labels): check_config (runtime/config_checks.hpp)
/// checks them once the layers that own those rules are linked.
constexpr auto checked_above = [](const auto&, const config&) -> problem { return std::nullopt; };

/// The type of auth.tokens; apply_yaml_map hands it sequences and mappings.
const std::string token_list_type = "list of {name, token, roles}";

template <class Ref> field address(std::string path, Ref ref, std::string help) {
  return make_field(std::move(path), "HOST:PORT", text_kind{}, ref, valid_listen, std::move(help));
}

template <class Ref>
field choice(std::string path, Ref ref, std::vector<std::string> options, std::string help) {
  choice_kind kind{std::move(options)};
  auto type = kind.joined();
  auto any = [](const std::string&, const config&) -> problem { return std::nullopt; };
  return make_field(std::move(path), std::move(type), std::move(kind), ref, any, std::move(help));
}

template <class Ref> field integer(std::string path, Ref ref, int lo, int hi, std::string help) {
  bool open_ended = hi == INT_MAX;
  auto type = open_ended ? "int >= " + std::to_string(lo)
                         : "int " + std::to_string(lo) + ".." + std::to_string(hi);
  auto check = [lo, hi, open_ended](int v, const config&) -> problem {
    if (v >= lo && v <= hi)
      return std::nullopt;
    if (open_ended)
      return "must be >= " + std::to_string(lo) + ", got " + std::to_string(v);
    return "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
           std::to_string(v);
  };
  return make_field(std::move(path), std::move(type), int_kind{}, ref, check, std::move(help));
}

template <class Ref> field size(std::string path, Ref ref, uint64_t min, std::string help) {
  auto type = min == 0 ? std::string{"size"} : "size >= " + show_size(min);
  auto check = [min](uint64_t v, const config&) -> problem {
    if (v >= min)
      return std::nullopt;
    return "must be >= " + show_size(min) + ", got " + show_size(v);
  };
  return make_field(std::move(path), std::move(type), size_kind{}, ref, check, std::move(help));
}

template <class Ref>
field duration(std::string path, Ref ref, duration_floor floor, std::string help) {
  return make_field(std::move(path), "duration " + floor.shown, duration_kind{}, ref, floor.check,
                    std::move(help));
}

template <class Ref> field boolean(std::string path, Ref ref, std::string help) {
  auto any = [](bool, const config&) -> problem { return std::nullopt; };
  return make_field(std::move(path), "bool", bool_kind{}, ref, any, std::move(help));
}

template <class Ref>
field number(std::string path, Ref ref, double lo_exclusive, double hi_exclusive,
             std::string help) {
  std::ostringstream type;
  type << "number in (" << lo_exclusive << ", " << hi_exclusive << ")";
  auto check = [lo_exclusive, hi_exclusive](double v, const config&) -> problem {
    if (v > lo_exclusive && v < hi_exclusive)
      return std::nullopt;
    std::ostringstream why;
    why << "must be between " << lo_exclusive << " and " << hi_exclusive << " (exclusive), got "
        << v;
    return why.str();
  };
  return make_field(std::move(path), type.str(), number_kind{}, ref, check, std::move(help));
}

template <class Ref, class Check>
field json_object(std::string path, Ref ref, Check check, std::string help) {
  return make_field(std::move(path), "JSON object", json_object_kind{}, ref, check,
                    std::move(help));
}

template <class Ref> field string_list(std::string path, Ref ref, std::string help) {
  auto any = [](const std::string&, const config&) -> problem { return std::nullopt; };
  return make_field(std::move(path), "list", list_kind{}, ref, any, std::move(help));
}

/// A URL of an optional HTTP service (empty: off).
problem optional_http_url(const std::string& v, const config&) {
  if (v.empty())
    return std::nullopt;
  std::string why;
  if (!http::parse_url(v, &why))
    return why;
  return std::nullopt;
}

problem optional_redis_url(const std::string& v, const config&) {
  if (v.empty())
    return std::nullopt;
  std::string why;
  if (!redis::parse_url(v, &why))
    return why;
  return std::nullopt;
}

/// A part of a Redis key troupe also matches with SCAN: no separator, no glob.
problem valid_key_part(const std::string& v, const config&) {
  if (v.empty())
    return "must not be empty";
  for (char c : v)
    if (c == ':' || c == '*' || c == '?' || c == '[' || c == ']' || c == '\\' ||
        std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)))
      return "must not contain ':', glob characters (*?[]\\), spaces or control characters, got " +
             in_quotes(v);
  return std::nullopt;
}

/// jobs.inherit_env: variable names or fnmatch globs of them.
problem valid_env_patterns(const std::string& v, const config&) {
  std::string_view rest = v;
  while (!rest.empty()) {
    auto comma = rest.find(',');
    auto item = rest.substr(0, comma);
    for (char ch : item)
      if (ch == '=' || is_space(ch) || std::iscntrl(static_cast<unsigned char>(ch)))
        return "expected variable names or globs like AWS_*, got " + in_quotes(item);
    if (comma == std::string_view::npos)
      break;
    rest.remove_prefix(comma + 1);
  }
  return std::nullopt;
}

problem valid_port_range(const std::string& v, const config&) {
  std::string why;
  if (!parse_port_range(v, &why))
    return why;
  return std::nullopt;
}

field noting_default(std::string note, field f) {
  f.default_note = std::move(note);
  return f;
}

/// Every key troupe understands, in the order --help lists them.
const std::vector<field>& fields() {
  static const std::vector<field> table = [] {
    auto sup = &config::supervisor;
    using sc = supervisor_config;
    duration_floor backoff_floor{
        ">= supervisor.backoff_initial", [](milliseconds v, const config& c) -> problem {
          if (v >= c.supervisor.backoff_initial)
            return std::nullopt;
          return "must be >= supervisor.backoff_initial (" +
                 show_duration(c.supervisor.backoff_initial) + "), got " + show_duration(v);
        }};
    duration_floor restart_max_floor{
        ">= apps.restart_backoff_initial", [](milliseconds v, const config& c) -> problem {
          if (v >= c.apps.restart_backoff_initial)
            return std::nullopt;
          return "must be >= apps.restart_backoff_initial (" +
                 show_duration(c.apps.restart_backoff_initial) + "), got " + show_duration(v);
        }};
    return std::vector<field>{
        noting_default("host name",
                       text("node_name", at(&config::node_name),
                            "Name of this node in cluster membership, logs and metrics")),
        address("listen", at(&config::listen),
                "Address of the HTTP API; port 0 picks a free port; IPv6 as [::1]:8000"),
        text("data_dir", at(&config::data_dir), "Directory of the LMDB store and job workspaces"),
        choice("log.level", at(&config::log, &log_config::level),
               {"trace", "debug", "info", "warn", "error", "critical", "off"},
               "Lowest severity that is logged"),
        choice("log.format", at(&config::log, &log_config::format), {"json", "text"},
               "text for people, json for log collectors"),
        choice("auth.mode", at(&config::auth, &auth_config::mode), {"token", "none"},
               "token: bearer tokens required; none: every caller is admin (only on a loopback "
               "listen address unless auth.allow_insecure)"),
        make_field("auth.tokens", token_list_type, token_list_kind{},
                   at(&config::auth, &auth_config::tokens), checked_above,
                   "API tokens, roles read, submit or admin (the strongest counts); none "
                   "anywhere: an admin token generated in DATA_DIR/token; the environment holds "
                   "the list as JSON"),
        optional_text("auth.tokens_file", at(&config::auth, &auth_config::tokens_file),
                      "YAML/JSON file with more tokens (a list, or a mapping with tokens:); "
                      "re-read on SIGHUP"),
        boolean("auth.public_metrics", at(&config::auth, &auth_config::public_metrics),
                "GET /metrics needs no token (Prometheus scrapes, probes)"),
        boolean("auth.allow_insecure", at(&config::auth, &auth_config::allow_insecure),
                "Allows auth.mode none on a non-loopback listen address"),
        integer("http.io_threads", at(&config::http, &http_config::io_threads), 1, 64,
                "Threads serving HTTP connections"),
        size("http.max_json_bytes", at(&config::http, &http_config::max_json_bytes), 1,
             "Largest JSON/YAML request body; larger ones get 413 (uploads: "
             "jobs.max_archive_bytes)"),
        duration("http.request_timeout", at(&config::http, &http_config::request_timeout),
                 above(0ms), "Idle timeout of a connection, reset while bytes flow"),
        duration("http.header_timeout", at(&config::http, &http_config::header_timeout), above(0ms),
                 "A request's headers must arrive within this time (slowloris)"),
        duration("http.max_request_duration", at(&config::http, &http_config::max_request_duration),
                 above(0ms), "Overall cap on reading one request, its body included"),
        duration("http.sse_ping_interval", at(&config::http, &http_config::sse_ping_interval),
                 above(0ms), "Interval of `: ping` comments on idle SSE streams"),
        integer("http.sse_queue_limit", at(&config::http, &http_config::sse_queue_limit), 1,
                INT_MAX, "Events queued for one SSE client before it is disconnected"),
        size("http.sse_queue_bytes", at(&config::http, &http_config::sse_queue_bytes), KiB,
             "Bytes queued for one SSE client before it is disconnected"),
        duration("http.shutdown_grace", at(&config::http, &http_config::shutdown_grace),
                 at_least(0ms), "How long shutdown waits for in-flight requests"),
        integer("http.read_workers", at(&config::http, &http_config::read_workers), 1, 64,
                "Threads running the long store reads of requests (GET /logs, GET /jobs)"),
        integer("http.read_queue", at(&config::http, &http_config::read_queue), 1, INT_MAX,
                "Such reads waiting or running at once; further ones get 503 busy"),
        noting_default("descriptor limit - reserved_fds",
                       integer("http.max_connections",
                               at(&config::http, &http_config::max_connections), 0, INT_MAX,
                               "Open connections at most; further ones get 503 (0: derived)")),
        integer("http.reserved_fds", at(&config::http, &http_config::reserved_fds), 16, INT_MAX,
                "Descriptors kept free of connections for jobs, the store and sinks"),
        string_list("http.allowed_origins", at(&config::http, &http_config::allowed_origins),
                    "Browser origins (scheme://host[:port]) served besides troupe's own, with "
                    "CORS headers"),
        string_list("http.allowed_hosts", at(&config::http, &http_config::allowed_hosts),
                    "Host header values accepted on loopback besides localhost, 127.0.0.1, "
                    "[::1]"),
        make_field(
            "http.rate_limit.requests_per_second", "number >= 0", number_kind{},
            at(&config::http, &http_config::rate_limit, &rate_limit_config::requests_per_second),
            [](double v, const config&) -> problem {
              if (v >= 0)
                return std::nullopt;
              return "must be >= 0, got " + number_kind{}.show(v);
            },
            "Mutating requests per second per token and per client address (0: off)"),
        integer("http.rate_limit.burst",
                at(&config::http, &http_config::rate_limit, &rate_limit_config::burst), 1, INT_MAX,
                "Requests allowed in a burst above the rate"),
        optional_text("http.tls.cert_file",
                      at(&config::http, &http_config::tls, &tls_config::cert_file),
                      "PEM certificate chain; with key_file the API is served over HTTPS"),
        optional_text("http.tls.key_file",
                      at(&config::http, &http_config::tls, &tls_config::key_file),
                      "PEM private key of cert_file"),
        size("store.map_size_bytes", at(&config::store, &store_config::map_size_bytes), MiB,
             "LMDB map size: the upper bound of the data file"),
        integer("supervisor.max_restarts", at(sup, &sc::max_restarts), 0, INT_MAX,
                "Restarts allowed within restart_window before the supervisor escalates"),
        duration("supervisor.restart_window", at(sup, &sc::restart_window), above(0ms),
                 "Window in which restarts are counted"),
        duration("supervisor.backoff_initial", at(sup, &sc::backoff_initial), above(0ms),
                 "First restart delay, doubled per recent restart"),
        duration("supervisor.backoff_max", at(sup, &sc::backoff_max), backoff_floor,
                 "Upper bound of the restart delay"),
        noting_default("number of cores",
                       integer("jobs.concurrency", at(&config::jobs, &jobs_config::concurrency), 1,
                               INT_MAX, "Jobs running at once on this node")),
        noting_default("make test if a Makefile exists, else ./ci.sh",
                       text("jobs.default_command",
                            at(&config::jobs, &jobs_config::default_command),
                            "Shell command of /submit* and of specs without a command")),
        optional_text("jobs.user", at(&config::jobs, &jobs_config::user),
                      "User jobs run as while troupe is root (their workspaces are chowned "
                      "to it); empty: troupe's own user"),
        optional_text("jobs.group", at(&config::jobs, &jobs_config::group),
                      "Group jobs run as (needs jobs.user); empty: the user's primary group"),
        make_field("jobs.inherit_env", "list", list_kind{},
                   at(&config::jobs, &jobs_config::inherit_env), valid_env_patterns,
                   "Names or globs of troupe's environment variables jobs get besides PATH, "
                   "HOME, LANG, LC_*, TZ, USER, SHELL (never TROUPE_*)"),
        duration("jobs.cancel_grace", at(&config::jobs, &jobs_config::cancel_grace), at_least(0ms),
                 "SIGTERM to SIGKILL grace on cancel and timeout"),
        duration("jobs.retry_backoff_initial",
                 at(&config::jobs, &jobs_config::retry_backoff_initial), above(0ms),
                 "First retry delay, doubled per attempt"),
        duration("jobs.retry_backoff_max", at(&config::jobs, &jobs_config::retry_backoff_max),
                 above(0ms), "Upper bound of the retry delay"),
        duration("jobs.workspace_retention", at(&config::jobs, &jobs_config::workspace_retention),
                 at_least(0ms), "How long a finished job's workspace is kept"),
        duration("jobs.retention", at(&config::jobs, &jobs_config::retention), above(0ms),
                 "How long job records and logs are kept after the job ended"),
        duration("jobs.sweep_interval", at(&config::jobs, &jobs_config::sweep_interval), above(0ms),
                 "Interval of the workspace and retention sweep"),
        size("jobs.max_line_bytes", at(&config::jobs, &jobs_config::max_line_bytes), 16,
             "Output lines longer than this are split, never dropped"),
        size("jobs.max_archive_bytes", at(&config::jobs, &jobs_config::max_archive_bytes), 1,
             "Largest project archive accepted"),
        integer("jobs.max_archive_entries", at(&config::jobs, &jobs_config::max_archive_entries), 1,
                INT_MAX, "Most entries a project archive may have"),
        size("jobs.max_expanded_bytes", at(&config::jobs, &jobs_config::max_expanded_bytes), 1,
             "Most bytes a project archive may expand to"),
        noting_default("number of cores",
                       integer("jobs.max_concurrent_extractions",
                               at(&config::jobs, &jobs_config::max_concurrent_extractions), 1,
                               INT_MAX, "Archives extracted at once; further uploads wait")),
        size("jobs.max_archive_memory_bytes",
             at(&config::jobs, &jobs_config::max_archive_memory_bytes), MiB,
             "Most memory an archive's decoder may need (xz/lzma dictionary, zstd window)"),
        text("logs.namespace", at(&config::logs, &logs_config::ns),
             "namespace label of every log entry"),
        text("logs.service", at(&config::logs, &logs_config::service),
             "service label of troupe's own log lines"),
        choice("logs.stdout_level", at(&config::logs, &logs_config::stdout_level),
               {"trace", "debug", "info", "warn", "error", "critical"},
               "Level of stdout lines that carry none of their own"),
        choice("logs.stderr_level", at(&config::logs, &logs_config::stderr_level),
               {"trace", "debug", "info", "warn", "error", "critical"},
               "Level of stderr lines that carry none of their own"),
        boolean("logs.stdout_sink", at(&config::logs, &logs_config::stdout_sink),
                "Forward every log entry (jobs included) to troupe's stdout"),
        duration("logs.retention", at(&config::logs, &logs_config::retention), at_least(60'000ms),
                 "Lines older than this are removed from the local store (GET /logs, job logs)"),
        size("logs.max_bytes", at(&config::logs, &logs_config::max_bytes), MiB,
             "Size the local log table is kept under (capped at half of "
             "store.map_size_bytes); the oldest lines go first"),
        optional_text("logs.loki.url", at(&config::logs, &logs_config::loki, &loki_config::url),
                      "Loki base URL, e.g. http://127.0.0.1:3100; empty: the Loki sink is off"),
        optional_text("logs.loki.tenant",
                      at(&config::logs, &logs_config::loki, &loki_config::tenant),
                      "X-Scope-OrgID sent to Loki; empty: none"),
        boolean("logs.loki.gzip", at(&config::logs, &logs_config::loki, &loki_config::gzip),
                "gzip push bodies"),
        optional_text("logs.loki.username",
                      at(&config::logs, &logs_config::loki, &loki_config::username),
                      "Basic auth user for Loki"),
        optional_text("logs.loki.password",
                      at(&config::logs, &logs_config::loki, &loki_config::password),
                      "Basic auth password for Loki"),
        optional_text("logs.loki.bearer_token",
                      at(&config::logs, &logs_config::loki, &loki_config::bearer_token),
                      "Bearer token for Loki"),
        integer("logs.loki.batch_entries",
                at(&config::logs, &logs_config::loki, &loki_config::batch_entries), 1, 1000000,
                "Flush a batch at this many entries"),
        size("logs.loki.batch_bytes",
             at(&config::logs, &logs_config::loki, &loki_config::batch_bytes), 1,
             "Flush a batch at this many bytes of lines"),
        duration("logs.loki.batch_wait",
                 at(&config::logs, &logs_config::loki, &loki_config::batch_wait), above(0ms),
                 "Flush a batch when its oldest entry waited this long"),
        choice("logs.loki.request_id_as",
               at(&config::logs, &logs_config::loki, &loki_config::request_id_as),
               {"structured_metadata", "label"}, "How request_id is sent to Loki"),
        size("logs.loki.outbox_bytes",
             at(&config::logs, &logs_config::loki, &loki_config::outbox_bytes), 1,
             "Unshipped bytes kept while Loki is away; the oldest beyond are dropped and counted"),
        duration("logs.loki.timeout", at(&config::logs, &logs_config::loki, &loki_config::timeout),
                 above(0ms), "Timeout of one push"),
        duration("logs.loki.backoff_initial",
                 at(&config::logs, &logs_config::loki, &loki_config::backoff_initial), above(0ms),
                 "First retry delay after a failed push (doubled, with jitter)"),
        duration("logs.loki.backoff_max",
                 at(&config::logs, &logs_config::loki, &loki_config::backoff_max), above(0ms),
                 "Upper bound of the retry delay"),
        integer("logs.loki.breaker_failures",
                at(&config::logs, &logs_config::loki, &loki_config::breaker_failures), 1, 1000,
                "Consecutive failures that open the circuit breaker"),
        duration("logs.loki.breaker_cooldown",
                 at(&config::logs, &logs_config::loki, &loki_config::breaker_cooldown), above(0ms),
                 "How long the open breaker waits before a probe"),
        choice("metrics.mode", at(&config::metrics, &metrics_config::mode),
               {"local", "redis", "proxy"},
               "local series; redis: plus stats folded from Redis and windows written back; "
               "proxy: upstreams' /monitoring/system re-exported"),
        number("metrics.relative_accuracy",
               at(&config::metrics, &metrics_config::relative_accuracy), 1e-6, 0.5,
               "Relative error of the percentile sketches (0.01 = 1 %)"),
        duration("metrics.sample_interval", at(&config::metrics, &metrics_config::sample_interval),
                 above(0ms), "Hot paths are drained and gauges sampled this often"),
        integer("metrics.max_series", at(&config::metrics, &metrics_config::max_series), 1, INT_MAX,
                "Most windowed series; observations of further ones are dropped and counted"),
        duration("metrics.export_interval", at(&config::metrics, &metrics_config::export_interval),
                 above(0ms), "Interval of the export loop (Pushgateway, Redis, proxy polls)"),
        boolean("metrics.export_on_start", at(&config::metrics, &metrics_config::export_on_start),
                "Export once right after start"),
        boolean("metrics.run_once", at(&config::metrics, &metrics_config::run_once),
                "`troupe metrics export` exports once and exits (like --once)"),
        json_object(
            "metrics.mapping", at(&config::metrics, &metrics_config::mapping), checked_above,
            "Internal key -> {name, unit}, e.g. {\"sse.connections\":{\"name\":\"ingress_sse\"}}"),
        duration(
            "metrics.prometheus.scrape_ttl",
            [](auto& c) -> decltype(auto) { return (c.metrics.scrape_ttl); }, at_least(0ms),
            "GET /metrics answers from a cache this old at most (0: live)"),
        make_field("metrics.pushgateway.url", "URL", text_kind{},
                   at(&config::metrics, &metrics_config::pushgateway, &pushgateway_config::url),
                   optional_http_url, "Pushgateway base URL; empty: no push"),
        text("metrics.pushgateway.job",
             at(&config::metrics, &metrics_config::pushgateway, &pushgateway_config::job),
             "job of the Pushgateway grouping key"),
        json_object(
            "metrics.pushgateway.grouping",
            at(&config::metrics, &metrics_config::pushgateway, &pushgateway_config::grouping),
            checked_above, "Further grouping labels, e.g. {\"tenant\":\"t\"}"),
        duration("metrics.pushgateway.timeout",
                 at(&config::metrics, &metrics_config::pushgateway, &pushgateway_config::timeout),
                 above(0ms), "Timeout of one push or delete"),
        make_field("metrics.redis.url", "URL", text_kind{},
                   at(&config::metrics, &metrics_config::redis, &redis_metrics_config::url),
                   optional_redis_url, "redis://[[user]:password@]host[:port][/db] (redis mode)"),
        text("metrics.redis.prefix",
             at(&config::metrics, &metrics_config::redis, &redis_metrics_config::prefix),
             "First part of every Redis key"),
        make_field("metrics.redis.tenant", "string", text_kind{},
                   at(&config::metrics, &metrics_config::redis, &redis_metrics_config::tenant),
                   valid_key_part, "Tenant part of the Redis keys"),
        make_field("metrics.redis.project", "string", text_kind{},
                   at(&config::metrics, &metrics_config::redis, &redis_metrics_config::project),
                   valid_key_part, "Project part of the Redis keys"),
        duration("metrics.redis.stats_max_age",
                 at(&config::metrics, &metrics_config::redis, &redis_metrics_config::stats_max_age),
                 above(0ms), "Published stats older than this are ignored"),
        duration("metrics.redis.ttl",
                 at(&config::metrics, &metrics_config::redis, &redis_metrics_config::ttl),
                 at_least(1000ms), "TTL of the windows written back to Redis"),
        duration("metrics.redis.timeout",
                 at(&config::metrics, &metrics_config::redis, &redis_metrics_config::timeout),
                 above(0ms), "Connect and command timeout"),
        string_list("metrics.proxy.urls",
                    at(&config::metrics, &metrics_config::proxy, &proxy_metrics_config::urls),
                    "Base URLs whose /monitoring/system is re-exported (proxy mode)"),
        optional_text(
            "metrics.proxy.auth_header_name",
            at(&config::metrics, &metrics_config::proxy, &proxy_metrics_config::auth_header_name),
            "Header sent with every poll, e.g. Authorization"),
        optional_text(
            "metrics.proxy.auth_header_value",
            at(&config::metrics, &metrics_config::proxy, &proxy_metrics_config::auth_header_value),
            "Its value, e.g. Bearer <token>"),
        duration("metrics.proxy.timeout",
                 at(&config::metrics, &metrics_config::proxy, &proxy_metrics_config::timeout),
                 above(0ms), "Timeout of one poll"),
        make_field("apps.port_range", "FIRST-LAST", text_kind{},
                   at(&config::apps, &apps_config::port_range), valid_port_range,
                   "Ports handed to app instances (one per instance port), inclusive"),
        duration("apps.restart_backoff_initial",
                 at(&config::apps, &apps_config::restart_backoff_initial), above(0ms),
                 "First restart delay of a crashed instance, doubled per quick exit"),
        duration("apps.restart_backoff_max", at(&config::apps, &apps_config::restart_backoff_max),
                 restart_max_floor, "Upper bound of the restart delay"),
        duration("apps.restart_backoff_reset",
                 at(&config::apps, &apps_config::restart_backoff_reset), above(0ms),
                 "An instance running this long starts over at the first delay"),
        integer("apps.max_apps", at(&config::apps, &apps_config::max_apps), 1, 100000,
                "Apps registered on the node at most"),
        integer("apps.max_instances", at(&config::apps, &apps_config::max_instances), 1, 100000,
                "Instances of all apps that are up, at most (scale and up beyond it answer 400)"),
        // -- apps: health probes and resource limits --
        integer("apps.max_concurrent_probes",
                at(&config::apps, &apps_config::max_concurrent_probes), 1, INT_MAX,
                "Health probes running at once; further ones wait their turn"),
        size("apps.max_probe_response_bytes",
             at(&config::apps, &apps_config::max_probe_response_bytes), 256,
             "Bytes of a health probe's HTTP response read at most (its status line)"),
        choice("apps.limits", at(&config::apps, &apps_config::limits),
               {"auto", "cgroup-v2", "cgroup-v1", "rlimit", "none"},
               "How instance cpu/memory limits are enforced: auto picks the best the host "
               "allows; a named mechanism is the best one tried"),
        duration("apps.sample_interval", at(&config::apps, &apps_config::sample_interval),
                 above(99ms), "How often each instance's CPU and RSS are sampled into its windows"),
        choice("proxy.mode", at(&config::proxy, &proxy_config::mode), {"builtin", "nginx"},
               "builtin: troupe's own proxy; nginx: troupe renders and reloads nginx's config"),
        make_field("proxy.listen", "HOST:PORT", text_kind{},
                   at(&config::proxy, &proxy_config::listen), optional_listen,
                   "Shared listener of the apps (port 0 picks a free port); empty: no proxy"),
        integer("proxy.io_threads", at(&config::proxy, &proxy_config::io_threads), 1, 64,
                "Threads of the built-in proxy (each with its own connections and pools)"),
        duration("proxy.upstream_timeout", at(&config::proxy, &proxy_config::upstream_timeout),
                 above(0ms), "No response (or no further byte) from an instance this long: 504"),
        duration("proxy.connect_timeout", at(&config::proxy, &proxy_config::connect_timeout),
                 above(0ms), "Connecting to an instance takes at most this long"),
        integer("proxy.max_fails", at(&config::proxy, &proxy_config::max_fails), 1, 1000,
                "Consecutive connect failures that eject an instance"),
        integer("proxy.eject_seconds", at(&config::proxy, &proxy_config::eject_seconds), 1, 3600,
                "How long an ejected instance gets no requests"),
        integer("proxy.max_connections", at(&config::proxy, &proxy_config::max_connections), 1,
                1'000'000, "Client connections held at most; further ones are closed"),
        duration("proxy.client_idle_timeout",
                 at(&config::proxy, &proxy_config::client_idle_timeout), above(0ms),
                 "A client connection idle this long between requests is closed"),
        duration("proxy.header_timeout", at(&config::proxy, &proxy_config::header_timeout),
                 above(0ms), "A request's header must arrive within this"),
        size("proxy.max_header_bytes", at(&config::proxy, &proxy_config::max_header_bytes), 1024,
             "Largest request or response header (431 / 502 beyond)"),
        integer("proxy.upstream_keepalive", at(&config::proxy, &proxy_config::upstream_keepalive),
                0, 10'000, "Idle keep-alive connections kept per instance and io thread"),
        duration("proxy.upstream_idle_timeout",
                 at(&config::proxy, &proxy_config::upstream_idle_timeout), above(0ms),
                 "An idle upstream connection is closed after this"),
        boolean("proxy.via", at(&config::proxy, &proxy_config::via), "Adds Via: 1.1 troupe"),
        optional_text("proxy.nginx.conf_dir",
                      at(&config::proxy, &proxy_config::nginx, &proxy_nginx_config::conf_dir),
                      "Where troupe writes nginx's config (empty: DATA_DIR/nginx)"),
        optional_text(
            "proxy.nginx.template",
            at(&config::proxy, &proxy_config::nginx, &proxy_nginx_config::template_path),
            "Template of an app's upstream and location (empty: configs/nginx-app.conf.in)"),
        optional_text("proxy.nginx.main_conf",
                      at(&config::proxy, &proxy_config::nginx, &proxy_nginx_config::main_conf),
                      "nginx.conf including conf_dir/troupe.conf (required in nginx mode)"),
        text("proxy.nginx.binary",
             at(&config::proxy, &proxy_config::nginx, &proxy_nginx_config::binary),
             "The nginx binary (nginx -t -c validates every candidate)"),
        optional_text("proxy.nginx.reload_command",
                      at(&config::proxy, &proxy_config::nginx, &proxy_nginx_config::reload_command),
                      "Reloads nginx (empty: nginx -s reload with the configured pid file)"),
        duration("proxy.nginx.min_reload_interval",
                 at(&config::proxy, &proxy_config::nginx, &proxy_nginx_config::min_reload_interval),
                 at_least(0ms), "At most one reload per this interval; changes coalesce"),
        make_field("proxy.nginx.status_listen", "HOST:PORT", text_kind{},
                   at(&config::proxy, &proxy_config::nginx, &proxy_nginx_config::status_listen),
                   optional_listen,
                   "nginx's stub_status server troupe renders and polls; empty: none"),
        boolean("debug.fault_injection", at(&config::debug, &debug_config::fault_injection),
                "Enables POST /debug/crash/{actor} (for tests and chaos drills)"),
    };
  }();
  return table;
}

const field* find_field(std::string_view path) {
  auto& all = fields();
  auto i = std::find_if(all.begin(), all.end(), [&](const field& f) { return f.path == path; });
  return i == all.end() ? nullptr : &*i;
}

/// The keys under a section, e.g. "log.level, log.format"; empty if `path` is no section.
std::string keys_of(std::string_view section) {
  std::string out;
  for (auto& f : fields())
    if (!section.empty() && starts_with(f.path, section) && f.path.size() > section.size() &&
        f.path[section.size()] == '.')
      out += (out.empty() ? "" : ", ") + f.path;
  return out;
}

/// `TROUPE_` + the path upper-cased, with `__` for each dot.
std::string env_name(std::string_view path) {
  std::string out = "TROUPE_";
  for (char ch : path)
    if (ch == '.')
      out += "__";
    else
      out += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return out;
}

/// The inverse of env_name: TROUPE_HTTP__IO_THREADS → http.io_threads.
std::string env_key(std::string_view name) {
  name.remove_prefix(std::string_view{"TROUPE_"}.size());
  std::string out;
  for (size_t i = 0; i < name.size(); ++i)
    if (name[i] == '_' && i + 1 < name.size() && name[i + 1] == '_') {
      out += '.';
      ++i;
    } else {
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(name[i])));
    }
  return out;
}

/// Set by troupe for its jobs or injected by Kubernetes service links; never config.
bool ignored_env(std::string_view name) {
  return name == "TROUPE_CONFIG" || name == "TROUPE_JOB_ID" || name == "TROUPE_REQUEST_ID" ||
         name == "TROUPE_JOB_ATTEMPT" || name == "TROUPE_NODE" || name == "TROUPE_SERVICE_HOST" ||
         starts_with(name, "TROUPE_SERVICE_PORT") || starts_with(name, "TROUPE_PORT");
}

/// `key` as errors show it: `TROUPE_=x` or a top-level `"": x` name no key.
std::string shown_key(const std::string& key) {
  return key.empty() ? "(empty key)" : key;
}

/// Sets one key from raw text; errors name the key path, and `origin` (e.g.
/// "from TROUPE_X") is appended to the reason when given.
void assign(config& c, const std::string& key, std::string_view raw,
            const std::string& origin = {}) {
  auto suffix = origin.empty() ? std::string{} : " (" + origin + ")";
  auto f = find_field(key);
  if (key == "http.max_body_bytes")
    throw config_error(key, "no longer used: JSON/YAML bodies are bounded by "
                            "http.max_json_bytes, uploads by jobs.max_archive_bytes" +
                                suffix);
  if (f == nullptr) {
    auto keys = keys_of(key);
    throw config_error(shown_key(key),
                       (keys.empty() ? std::string{"unknown key"}
                                     : "is a section, not a key (its keys: " + keys + ")") +
                           suffix);
  }
  problem p;
  try {
    p = f->set(c, raw);
  } catch (const config_error& e) { // a kind that names an element (auth.tokens[1].roles)
    throw config_error(e.path(), e.reason() + suffix);
  }
  if (p)
    throw config_error(key, *p + suffix);
}

config defaults() {
  config c;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0')
    c.node_name = host;
  else
    c.node_name = "localhost";
  c.jobs.concurrency = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  c.jobs.max_concurrent_extractions = c.jobs.concurrency;
  return c;
}

// -- sources ----------------------------------------------------------------------

/// Reads a whole file; a missing file is an error only if `required`.
std::optional<std::string> read_file(const std::string& file, bool required) {
  std::error_code ec;
  auto st = fs::status(file, ec);
  if (!fs::exists(st)) {
    if (!required)
      return std::nullopt;
    throw config_error(file, "file not found");
  }
  if (fs::is_directory(st))
    throw config_error(file, "is a directory, not a file");
  std::ifstream in{file, std::ios::binary};
  if (!in)
    throw config_error(file, std::string{"cannot read: "} + std::strerror(errno));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string describe(const YAML::Node& node) {
  if (node.IsMap())
    return "a mapping";
  if (node.IsSequence())
    return "a sequence";
  return in_quotes(node.Scalar());
}

/// A YAML mapping or sequence as JSON text (scalars become strings).
nlohmann::json yaml_to_json(const YAML::Node& node) {
  if (node.IsMap()) {
    auto obj = nlohmann::json::object();
    for (const auto& kv : node)
      obj[kv.first.Scalar()] = yaml_to_json(kv.second);
    return obj;
  }
  if (node.IsSequence()) {
    auto arr = nlohmann::json::array();
    for (const auto& item : node)
      arr.push_back(yaml_to_json(item));
    return arr;
  }
  if (node.IsNull())
    return nullptr;
  return node.Scalar();
}

void apply_yaml_map(config& c, const YAML::Node& map, const std::string& prefix) {
  std::set<std::string> seen;
  for (const auto& kv : map) {
    if (!kv.first.IsScalar())
      throw config_error(prefix.empty() ? "(top level)" : prefix, "keys must be plain names");
    auto key = kv.first.Scalar();
    auto path = prefix.empty() ? key : prefix + "." + key;
    const YAML::Node& value = kv.second;
    if (!seen.insert(key).second)
      throw config_error(shown_key(path), "duplicate key");
    if (auto keys = keys_of(path); !keys.empty()) {
      if (value.IsNull()) // `jobs:` with nothing under it
        continue;
      if (!value.IsMap())
        throw config_error(path, "expected a mapping of " + keys + ", got " + describe(value));
      apply_yaml_map(c, value, path);
      continue;
    }
    if (find_field(path) == nullptr && path != "http.max_body_bytes")
      throw config_error(shown_key(path), "unknown key");
    if (value.IsNull()) // `key: ~` keeps the built-in default
      continue;
    if (!value.IsScalar()) {
      auto type = find_field(path)->type;
      if ((type == "JSON object" && value.IsMap()) || (type == "list" && value.IsSequence()) ||
          type == token_list_type) {
        std::string text;
        try {
          text = yaml_to_json(value).dump();
        } catch (const nlohmann::json::type_error&) { // JSON text cannot hold invalid UTF-8
          throw config_error(path, "is not valid UTF-8");
        }
        assign(c, path, text);
        continue;
      }
      throw config_error(path, "expected a single value, got " + describe(value));
    }
    assign(c, path, value.Scalar());
  }
}

/// Where and why YAML failed to parse: " at line L, column C: why". A
/// message quoting the text (an escape, a version) is cut before the quote:
/// the text may be a token or password.
std::string yaml_problem(const YAML::Exception& e) {
  auto why = e.msg.substr(0, e.msg.find(": "));
  if (e.mark.is_null())
    return ": " + why;
  return " at line " + std::to_string(e.mark.line + 1) + ", column " +
         std::to_string(e.mark.column + 1) + ": " + why;
}

void apply_yaml_file(config& c, const std::string& file) {
  auto text = read_file(file, true);
  YAML::Node root;
  try {
    root = YAML::Load(*text);
  } catch (const YAML::Exception& e) {
    throw config_error(file, "invalid YAML" + yaml_problem(e));
  }
  if (root.IsNull())
    return;
  if (!root.IsMap())
    throw config_error(file, "expected a mapping of keys at the top level, got " + describe(root));
  apply_yaml_map(c, root, "");
}

bool valid_env_name(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0])))
    return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return ch == '_' || std::isalnum(static_cast<unsigned char>(ch));
  });
}

/// Parses one dotenv line into `out`; returns why it is malformed. Blank lines and
/// comments leave `out` empty.
problem parse_dotenv_line(std::string_view line,
                          std::optional<std::pair<std::string, std::string>>& out) {
  auto s = trim(line);
  if (s.empty() || s[0] == '#')
    return std::nullopt;
  if (starts_with(s, "export") && s.size() > 6 && is_space(s[6]))
    s = trim(s.substr(7));
  auto eq = s.find('=');
  if (eq == std::string_view::npos) // the line is not quoted: it may hold a secret
    return std::string{"expected KEY=VALUE"};
  auto name = trim(s.substr(0, eq));
  if (!valid_env_name(name))
    return "invalid variable name " + in_quotes(name);
  auto rest = trim(s.substr(eq + 1));
  std::string value;
  if (!rest.empty() && (rest[0] == '"' || rest[0] == '\'')) {
    char q = rest[0];
    size_t i = 1;
    for (; i < rest.size() && rest[i] != q; ++i) {
      if (q == '"' && rest[i] == '\\' && i + 1 < rest.size()) {
        char next = rest[++i];
        value += next == 'n' ? '\n' : next == 't' ? '\t' : next;
      } else {
        value += rest[i];
      }
    }
    if (i >= rest.size())
      return std::string{"unterminated "} + (q == '"' ? "double" : "single") + "-quoted value";
    auto after = trim(rest.substr(i + 1));
    if (!after.empty() && after[0] != '#') // not quoted: it may be part of a secret
      return std::string{"unexpected text after the closing quote"};
  } else {
    // An unquoted value ends at a comment that follows whitespace.
    for (size_t i = 0; i < rest.size(); ++i)
      if (rest[i] == '#' && i > 0 && is_space(rest[i - 1])) {
        rest = trim(rest.substr(0, i));
        break;
      }
    value = std::string{rest};
  }
  out.emplace(std::string{name}, std::move(value));
  return std::nullopt;
}

std::map<std::string, std::string> read_dotenv(const std::string& file) {
  std::map<std::string, std::string> vars;
  if (file.empty())
    return vars;
  auto text = read_file(file, false);
  if (!text)
    return vars;
  std::istringstream in{*text};
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    std::optional<std::pair<std::string, std::string>> var;
    if (auto p = parse_dotenv_line(line, var))
      throw config_error(file, "line " + std::to_string(n) + ": " + *p);
    if (var)
      vars[var->first] = std::move(var->second); // a later line wins, as in a shell
  }
  return vars;
}

struct env_value {
  std::string value;
  /// Where the variable came from, for errors: "TROUPE_X" or "TROUPE_X in .env".
  std::string origin;
};

/// TROUPE_* variables of the environment, filled in from the dotenv file.
std::map<std::string, env_value> troupe_environment(const config_sources& src) {
  std::map<std::string, env_value> vars;
  for (auto& entry : src.environment) {
    auto eq = entry.find('=');
    if (eq == std::string::npos || !starts_with(entry, "TROUPE_"))
      continue;
    auto name = entry.substr(0, eq);
    vars.emplace(name, env_value{entry.substr(eq + 1), name}); // the first wins, as in getenv
  }
  for (auto& [name, value] : read_dotenv(src.dotenv))
    if (starts_with(name, "TROUPE_"))
      vars.emplace(name, env_value{value, name + " in " + src.dotenv});
  return vars;
}

// -- API tokens -------------------------------------------------------------------

/// A value as long as a token is never echoed in an error: it may be one,
/// typed in the wrong place.
std::string echo(std::string_view v) {
  if (v.size() >= 16)
    return "(a value of " + std::to_string(v.size()) + " characters, not shown)";
  return in_quotes(v);
}

/// The shape of a node, never its text.
std::string shape(const YAML::Node& node) {
  if (node.IsMap())
    return "a mapping";
  if (node.IsSequence())
    return "a list";
  if (node.IsNull())
    return "nothing";
  return "a single value";
}

std::vector<std::string> parse_roles(const YAML::Node& node, const std::string& at) {
  const std::string names = "(read, submit or admin)";
  if (!node.IsSequence())
    throw config_error(at, "expected a list of roles " + names + ", got " + shape(node));
  if (node.size() == 0)
    throw config_error(at, "must name at least one role " + names);
  std::vector<std::string> roles;
  for (const auto& item : node) {
    if (!item.IsScalar())
      throw config_error(at, "expected role names " + names + ", got " + shape(item));
    auto name = ascii_lower(trim(item.Scalar()));
    auto r = parse_role(name);
    if (!r || *r == role::none)
      throw config_error(at, "unknown role " + echo(item.Scalar()) + " " + names);
    roles.push_back(name);
  }
  return roles;
}

auth_token parse_token_element(const YAML::Node& node, const std::string& at) {
  if (!node.IsMap())
    throw config_error(at, "expected a mapping of name, token and roles, got " + shape(node));
  auth_token t;
  std::set<std::string> seen;
  for (const auto& kv : node) {
    auto key = kv.first.IsScalar() ? kv.first.Scalar() : std::string{};
    if (key != "name" && key != "token" && key != "roles")
      throw config_error(at, "unknown key " + echo(key) + " (name, token and roles)");
    if (!seen.insert(key).second)
      throw config_error(at + "." + key, "duplicate key");
    const YAML::Node& value = kv.second;
    if (key == "roles") {
      t.roles = parse_roles(value, at + ".roles");
      continue;
    }
    if (!value.IsNull() && !value.IsScalar()) // null: empty, refused by the token table
      throw config_error(at + "." + key, "expected a string, got " + shape(value));
    (key == "name" ? t.name : t.token) = value.IsNull() ? std::string{} : value.Scalar();
  }
  for (auto required : {"name", "token", "roles"})
    if (seen.count(required) == 0)
      throw config_error(at + "." + required, "required");
  return t;
}

/// The list under `tokens:` of a tokens file written as a mapping.
YAML::Node tokens_of(const YAML::Node& map, const std::string& where) {
  for (const auto& kv : map)
    if (!kv.first.IsScalar() || kv.first.Scalar() != "tokens")
      throw config_error(where, "unknown key " +
                                    echo(kv.first.IsScalar() ? kv.first.Scalar() : "") +
                                    " (expected a list of tokens, or tokens: with the list)");
  if (map.size() == 0)
    return YAML::Node{};
  return map["tokens"];
}

/// nginx mode validates against nginx's own main configuration, which must
/// include troupe's file: there is no default that could be right.
void check_proxy_mode(const config& c) {
  if (c.proxy.mode == "nginx" && c.proxy.enabled() && c.proxy.nginx.main_conf.empty())
    throw config_error("proxy.nginx.main_conf",
                       "required with proxy.mode nginx: the nginx.conf that includes "
                       "proxy.nginx.conf_dir/troupe.conf (nginx -t -c validates it)");
}

/// Without tokens the API is a remote shell for whoever reaches it: only
/// this machine may, unless the operator says otherwise.
void check_auth_mode(const config& c) {
  if (c.auth.mode != "none" || c.auth.allow_insecure || is_loopback_host(c.listen_host()))
    return;
  throw config_error("auth.mode", "none is accepted only while listen is a loopback address "
                                  "(127.0.0.0/8, ::1, localhost), not " +
                                      c.listen +
                                      ": use tokens, or set auth.allow_insecure: true to give "
                                      "every client on the network admin rights");
}

} // namespace

std::vector<auth_token> parse_auth_tokens(std::string_view text, const std::string& where,
                                          bool tokens_key) {
  YAML::Node doc;
  try {
    doc = YAML::Load(std::string{text}); // JSON is YAML: one parser for both
  } catch (const YAML::Exception& e) {
    throw config_error(where, "not valid YAML or JSON" + yaml_problem(e));
  }
  // Copy-constructed, never assigned: assigning a YAML::Node rewrites the node it refers to.
  const YAML::Node list = tokens_key && doc.IsMap() ? tokens_of(doc, where) : doc;
  if (list.IsNull())
    return {};
  if (!list.IsSequence())
    throw config_error(where, "expected a list of {name, token, roles}, got " + shape(list));
  std::vector<auth_token> tokens;
  for (size_t i = 0; i < list.size(); ++i)
    tokens.push_back(parse_token_element(list[i], where + "[" + std::to_string(i) + "]"));
  return tokens;
}

std::optional<port_range> parse_port_range(std::string_view text, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<port_range> {
    if (why)
      *why = std::move(reason);
    return std::nullopt;
  };
  auto number = [](std::string_view part) -> std::optional<unsigned> {
    unsigned n = 0;
    auto [end, err] = std::from_chars(part.data(), part.data() + part.size(), n);
    if (part.empty() || err != std::errc{} || end != part.data() + part.size() || n < 1 ||
        n > 65535)
      return std::nullopt;
    return n;
  };
  auto dash = text.find('-');
  auto first = dash == std::string_view::npos ? std::nullopt : number(text.substr(0, dash));
  auto last = dash == std::string_view::npos ? std::nullopt : number(text.substr(dash + 1));
  if (!first || !last)
    return fail("expected FIRST-LAST with ports 1..65535, e.g. 20000-29999, got " +
                in_quotes(text));
  if (*first > *last)
    return fail("FIRST must not exceed LAST, got " + in_quotes(text));
  return port_range{static_cast<uint16_t>(*first), static_cast<uint16_t>(*last)};
}

bool is_loopback_host(std::string_view host) {
  if (ascii_lower(host) == "localhost")
    return true;
  auto text = std::string{host};
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1)
    return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) != 1)
    return false;
  if (IN6_IS_ADDR_LOOPBACK(&v6))
    return true;
  return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

config load_config(const config_sources& src) {
  auto env = troupe_environment(src);
  auto c = defaults();
  auto file = src.file;
  if (auto i = env.find("TROUPE_CONFIG"); file.empty() && i != env.end())
    file = i->second.value;
  if (!file.empty())
    apply_yaml_file(c, file);
  for (auto& [name, var] : env) {
    if (ignored_env(name))
      continue;
    auto key = env_key(name);
    assign(c, key, var.value, "from " + var.origin);
  }
  for (auto& [key, raw] : src.flags)
    assign(c, key, raw);
  // Ranges are checked on the merged result: a later layer may fix an earlier one.
  for (auto& f : fields())
    if (auto p = f.check(c))
      throw config_error(f.path, *p);
  if (c.metrics.mode == "redis" && c.metrics.redis.url.empty())
    throw config_error("metrics.redis.url", "required when metrics.mode is redis");
  if (c.metrics.mode == "proxy") {
    if (c.metrics.proxy.urls.empty())
      throw config_error("metrics.proxy.urls", "required when metrics.mode is proxy");
    std::string_view rest = c.metrics.proxy.urls;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      auto item = rest.substr(0, comma);
      std::string why;
      if (!http::parse_url(item, &why))
        throw config_error("metrics.proxy.urls", why);
      if (comma == std::string_view::npos)
        break;
      rest.remove_prefix(comma + 1);
    }
  }
  check_auth_mode(c);
  check_proxy_mode(c);
  if (c.http.tls.cert_file.empty() != c.http.tls.key_file.empty())
    throw config_error(c.http.tls.cert_file.empty() ? "http.tls.cert_file" : "http.tls.key_file",
                       "cert_file and key_file go together");
  if (c.metrics.proxy.auth_header_name.empty() != c.metrics.proxy.auth_header_value.empty())
    throw config_error("metrics.proxy.auth_header_name",
                       "auth_header_name and auth_header_value go together");
  // Checked against the host's user database now, so a typo stops the start.
  c.jobs.identity = host::resolve_job_identity(c.jobs.user, c.jobs.group, ::geteuid(), ::getegid());
  return c;
}

std::vector<std::string> process_environment() {
  std::vector<std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    out.emplace_back(*e);
  return out;
}

std::string describe_config_keys() {
  auto pad = [](std::string s, size_t width) {
    s.resize(std::max(width, s.size() + 1), ' ');
    return s;
  };
  auto d = defaults();
  std::ostringstream out;
  out << "Configuration keys, by precedence: built-in default < YAML file (TROUPE_CONFIG)\n"
         "< TROUPE_* environment (a .env file fills in unset variables) < flags.\n"
         "Sizes take B, KB, MB, GB (x1000) or KiB, MiB, GiB (x1024); durations take\n"
         "ms, s, m, h, d (a bare number means seconds); bools take true/false, yes/no, on/off.\n\n"
      << "  " << pad("KEY", 28) << pad("DEFAULT", 26) << "ENVIRONMENT\n";
  for (auto& f : fields()) {
    auto def = f.show(d);
    if (!f.default_note.empty())
      def += " (" + f.default_note + ")";
    out << "  " << pad(f.path, 28) << pad(def, 26) << env_name(f.path) << "\n"
        << "      " << f.type << ": " << f.help << "\n";
  }
  return out.str();
}

std::string config::listen_host() const {
  std::string host;
  if (auto p = split_listen(listen, &host, nullptr))
    throw config_error("listen", *p);
  return host;
}

uint16_t config::listen_port() const {
  uint16_t port = 0;
  if (auto p = split_listen(listen, nullptr, &port))
    throw config_error("listen", *p);
  return port;
}

} // namespace troupe
