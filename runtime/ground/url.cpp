#include "runtime/ground/url.hpp"

#include "runtime/ground/text.hpp"
#include <algorithm>
#include <cctype>
#include <charconv>

namespace troupe {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/// The one decoder: `strict` refuses a malformed escape, else keeps it as text.
bool decode(std::string_view s, bool form, bool strict, std::string& out) {
  out.clear();
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
      int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
      if (strict)
        return false;
    }
    out += (form && c == '+') ? ' ' : c;
  }
  return true;
}

} // namespace

std::string url_decode(std::string_view s, bool form) {
  std::string out;
  decode(s, form, false, out);
  return out;
}

bool percent_decode(std::string_view in, std::string& out) {
  return decode(in, false, true, out);
}

} // namespace troupe

namespace troupe::http {

namespace {

bool is_port(std::string_view s) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (s.empty() || s.size() > 5 || !std::all_of(s.begin(), s.end(), digit))
    return false;
  auto n = std::stoi(std::string{s});
  return n >= 1 && n <= 65535;
}

std::optional<url> fail(std::string* error, std::string message) {
  if (error)
    *error = std::move(message);
  return std::nullopt;
}

/// Splits "host[:port]" or "[v6]:port" into `u.host` and `u.port`.
bool split_authority(std::string_view authority, url& u) {
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos)
      return false;
    u.host = authority.substr(1, close - 1);
    auto rest = authority.substr(close + 1);
    if (!rest.empty() && rest.front() != ':')
      return false;
    port = rest.empty() ? "80" : rest.substr(1);
  } else {
    auto colon = authority.find(':');
    u.host = authority.substr(0, colon);
    port = colon == std::string_view::npos ? "80" : authority.substr(colon + 1);
  }
  u.port = port;
  return !u.host.empty() && is_port(port);
}

} // namespace

std::optional<url> parse_url(std::string_view text, std::string* error) {
  auto sep = text.find("://");
  if (sep == std::string_view::npos)
    return fail(error, "expected http://host[:port][/path], got '" + std::string{text} + "'");
  url u;
  u.scheme = ascii_lower(text.substr(0, sep));
  if (u.scheme == "https")
    return fail(error, "https is not supported yet");
  if (u.scheme != "http")
    return fail(error, "unsupported URL scheme '" + u.scheme + "'");
  auto rest = text.substr(sep + 3);
  if (rest.find_first_of("?#") != std::string_view::npos)
    return fail(error, "a base URL cannot have a query or fragment");
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  if (authority.find('@') != std::string_view::npos)
    return fail(error, "credentials in the URL are not supported");
  if (!split_authority(authority, u))
    return fail(error, "invalid host or port in '" + std::string{text} + "'");
  u.target = slash == std::string_view::npos ? "/" : std::string{rest.substr(slash)};
  return u;
}

} // namespace troupe::http

namespace troupe::redis {

namespace {

bool set_error(std::string* error, std::string text) {
  if (error)
    *error = std::move(text);
  return false;
}

/// Digits only, no sign, within [min, max].
template <class T> std::optional<T> parse_number(std::string_view text, T min, T max) {
  T value{};
  if (text.empty() || text.front() == '-' || text.front() == '+')
    return std::nullopt;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || ptr != text.data() + text.size() || value < min || value > max)
    return std::nullopt;
  return value;
}

} // namespace

std::optional<url_parts> parse_url(std::string_view text, std::string* error) {
  auto bad = [&](std::string reason) {
    set_error(error, "redis url \"" + std::string{text} + "\": " + reason);
    return std::nullopt;
  };
  constexpr std::string_view scheme = "redis://";
  if (text.substr(0, 9) == "rediss://")
    return bad("TLS (rediss://) is not supported");
  if (text.substr(0, scheme.size()) != scheme)
    return bad("expected redis://[[user]:password@]host[:port][/db]");
  auto rest = text.substr(scheme.size());
  if (rest.find_first_of("?#") != std::string_view::npos)
    return bad("query parameters and fragments are not supported");
  auto slash = rest.find('/');
  auto authority = rest.substr(0, slash);
  auto path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  url_parts out;
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    auto userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    auto colon = userinfo.find(':');
    if (colon == std::string_view::npos)
      return bad("credentials must be user:password or :password");
    if (!percent_decode(userinfo.substr(0, colon), out.username) ||
        !percent_decode(userinfo.substr(colon + 1), out.password))
      return bad("malformed percent-encoding in the credentials");
  }
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos)
      return bad("unterminated [ in the host");
    out.host = authority.substr(1, close - 1);
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':')
        return bad("unexpected text after ]");
      port = after.substr(1);
      if (port.empty())
        return bad("empty port");
    }
  } else {
    auto colon = authority.find(':');
    if (colon != std::string_view::npos && authority.find(':', colon + 1) != std::string_view::npos)
      return bad("IPv6 addresses need brackets");
    out.host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty())
        return bad("empty port");
    }
  }
  if (out.host.empty())
    return bad("missing host");
  if (!port.empty()) {
    auto p = parse_number<uint16_t>(port, 1, 65535);
    if (!p)
      return bad("port must be 1-65535, got \"" + std::string{port} + "\"");
    out.port = *p;
  }
  if (path.size() > 1) {
    auto db = parse_number<int>(path.substr(1), 0, 1 << 30);
    if (!db)
      return bad("database must be a non-negative integer, got \"" + std::string{path.substr(1)} +
                 "\"");
    out.db = *db;
  }
  return out;
}

} // namespace troupe::redis
