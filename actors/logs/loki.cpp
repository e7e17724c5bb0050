#include "actors/logs/loki.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "runtime/ground/json_text.hpp"
#include "runtime/ground/text.hpp"

namespace troupe::loki {

namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using label_set = std::map<std::string, std::string>;

label_set stream_labels(const entry& e, request_id_mode mode) {
  if (mode != request_id_mode::label || e.request_id.empty())
    return e.labels;
  auto labels = e.labels;
  labels["request_id"] = e.request_id;
  return labels;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

std::optional<milliseconds> delta_seconds(std::string_view text) {
  // RFC 7231 allows only digits; a negative count is read as "retry now".
  bool negative = !text.empty() && text.front() == '-';
  if (negative)
    text.remove_prefix(1);
  if (text.empty() || !std::all_of(text.begin(), text.end(), is_digit))
    return std::nullopt;
  if (negative)
    return milliseconds{0};
  constexpr int64_t max_seconds = std::numeric_limits<int64_t>::max() / 1000;
  int64_t seconds = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (ec == std::errc::result_out_of_range || seconds > max_seconds)
    seconds = max_seconds;
  return milliseconds{seconds * 1000};
}

/// Reads the fixed-layout pieces of an HTTP-date.
struct scanner {
  std::string_view rest;

  bool literal(std::string_view text) {
    if (rest.substr(0, text.size()) != text)
      return false;
    rest.remove_prefix(text.size());
    return true;
  }

  std::optional<int> number(size_t digits) {
    if (rest.size() < digits || !std::all_of(rest.begin(), rest.begin() + digits, is_digit))
      return std::nullopt;
    int value = 0;
    for (size_t i = 0; i < digits; ++i)
      value = value * 10 + (rest[i] - '0');
    rest.remove_prefix(digits);
    return value;
  }

  bool word() {
    auto n = std::find_if(rest.begin(), rest.end(), [](char c) { return !std::isalpha(uc(c)); }) -
             rest.begin();
    rest.remove_prefix(n);
    return n > 0;
  }

  std::optional<int> month() {
    static constexpr std::array<std::string_view, 12> names{
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
    if (rest.size() < 3)
      return std::nullopt;
    std::string name;
    for (char c : rest.substr(0, 3))
      name += static_cast<char>(std::tolower(uc(c)));
    auto it = std::find(names.begin(), names.end(), name);
    if (it == names.end())
      return std::nullopt;
    rest.remove_prefix(3);
    return static_cast<int>(it - names.begin()) + 1;
  }

  static unsigned char uc(char c) { return static_cast<unsigned char>(c); }
};

struct civil_time {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
};

bool is_leap(int y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

bool valid(const civil_time& t) {
  static constexpr std::array<int, 12> days{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (t.month < 1 || t.month > 12 || t.day < 1)
    return false;
  int last = days[t.month - 1] + (t.month == 2 && is_leap(t.year) ? 1 : 0);
  return t.day <= last && t.hour < 24 && t.minute < 60 && t.second <= 60;
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

std::chrono::system_clock::time_point to_time_point(const civil_time& t) {
  auto days = days_from_civil(t.year, static_cast<unsigned>(t.month), static_cast<unsigned>(t.day));
  auto seconds = days * 86400 + t.hour * 3600 + t.minute * 60 + t.second;
  return std::chrono::system_clock::time_point{std::chrono::seconds{seconds}};
}

bool time_of_day(scanner& s, civil_time& t) {
  auto h = s.number(2);
  auto m = s.literal(":") ? s.number(2) : std::nullopt;
  auto sec = s.literal(":") ? s.number(2) : std::nullopt;
  if (!h || !m || !sec)
    return false;
  t.hour = *h, t.minute = *m, t.second = *sec;
  return true;
}

/// "Sun, 06 Nov 1994 08:49:37 GMT"
std::optional<civil_time> imf_fixdate(scanner s) {
  civil_time t;
  if (!s.word() || !s.literal(", "))
    return std::nullopt;
  auto day = s.number(2);
  auto month = s.literal(" ") ? s.month() : std::nullopt;
  auto year = s.literal(" ") ? s.number(4) : std::nullopt;
  if (!day || !month || !year || !s.literal(" ") || !time_of_day(s, t) || !s.literal(" GMT") ||
      !s.rest.empty())
    return std::nullopt;
  t.day = *day, t.month = *month, t.year = *year;
  return t;
}

/// "Sunday, 06-Nov-94 08:49:37 GMT"; the century is resolved later.
std::optional<civil_time> rfc850_date(scanner s) {
  civil_time t;
  if (!s.word() || !s.literal(", "))
    return std::nullopt;
  auto day = s.number(2);
  auto month = s.literal("-") ? s.month() : std::nullopt;
  auto year = s.literal("-") ? s.number(2) : std::nullopt;
  if (!day || !month || !year || !s.literal(" ") || !time_of_day(s, t) || !s.literal(" GMT") ||
      !s.rest.empty())
    return std::nullopt;
  t.day = *day, t.month = *month, t.year = *year;
  return t;
}

/// "Sun Nov  6 08:49:37 1994"
std::optional<civil_time> asctime_date(scanner s) {
  civil_time t;
  if (!s.word() || !s.literal(" "))
    return std::nullopt;
  auto month = s.month();
  if (!month || !s.literal(" "))
    return std::nullopt;
  auto day = s.literal(" ") ? s.number(1) : s.number(2);
  if (!day || !s.literal(" ") || !time_of_day(s, t) || !s.literal(" "))
    return std::nullopt;
  auto year = s.number(4);
  if (!year || !s.rest.empty())
    return std::nullopt;
  t.day = *day, t.month = *month, t.year = *year;
  return t;
}

std::optional<std::chrono::system_clock::time_point>
http_date(std::string_view text, std::chrono::system_clock::time_point now) {
  auto t = imf_fixdate(scanner{text});
  if (!t)
    t = asctime_date(scanner{text});
  if (!t) {
    // RFC 7231: a two-digit year more than 50 years ahead is in the past century.
    t = rfc850_date(scanner{text});
    if (t)
      t->year += 2000;
    if (t && valid(*t) && to_time_point(*t) - now > std::chrono::hours{24 * 365 * 50})
      t->year -= 100;
  }
  if (!t || !valid(*t))
    return std::nullopt;
  return to_time_point(*t);
}

} // namespace

std::string push_body(const std::vector<entry>& entries, request_id_mode mode) {
  std::map<label_set, size_t> index;
  push_body_builder b;
  for (const auto& e : entries) {
    auto labels = stream_labels(e, mode);
    auto [it, added] = index.try_emplace(labels, b.streams());
    if (added) {
      std::vector<std::pair<std::string_view, std::string_view>> pairs{labels.begin(),
                                                                       labels.end()};
      b.add_stream(pairs);
    }
    b.add(it->second, e.ts_ns, e.line,
          mode == request_id_mode::structured_metadata ? std::string_view{e.request_id}
                                                       : std::string_view{});
  }
  return b.finish();
}

size_t push_body_builder::add_stream(
    const std::vector<std::pair<std::string_view, std::string_view>>& labels) {
  std::string head = "{\"stream\":{";
  bool first = true;
  for (auto& [k, v] : labels) {
    if (!first)
      head += ',';
    first = false;
    append_json_string(head, k);
    head += ':';
    append_json_string(head, v);
  }
  head += "},\"values\":[";
  heads_.push_back(std::move(head));
  values_.emplace_back();
  return heads_.size() - 1;
}

void push_body_builder::add(size_t n, int64_t ts_ns, std::string_view line,
                            std::string_view request_id) {
  auto& out = values_[n];
  if (!out.empty())
    out += ',';
  out += "[\"";
  out += std::to_string(ts_ns);
  out += "\",";
  append_json_string(out, line);
  if (!request_id.empty()) {
    out += ",{\"request_id\":";
    append_json_string(out, request_id);
    out += '}';
  }
  out += ']';
}

std::string push_body_builder::finish() {
  size_t size = 16;
  for (size_t i = 0; i < heads_.size(); ++i)
    size += heads_[i].size() + values_[i].size() + 4;
  std::string body;
  body.reserve(size);
  body += "{\"streams\":[";
  for (size_t i = 0; i < heads_.size(); ++i) {
    if (i > 0)
      body += ',';
    body += heads_[i];
    body += values_[i];
    body += "]}";
  }
  body += "]}";
  heads_.clear();
  values_.clear();
  return body;
}

std::string gzip(std::string_view data) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("gzip: deflateInit2 failed");
  std::string out;
  std::array<unsigned char, 64 * 1024> buf;
  auto rest = data;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.avail_in == 0 && !rest.empty()) {
      // avail_in is 32 bits wide; feed larger inputs in pieces.
      auto take = std::min<size_t>(rest.size(), 1u << 30);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(rest.data()));
      zs.avail_in = static_cast<uInt>(take);
      rest.remove_prefix(take);
    }
    zs.next_out = buf.data();
    zs.avail_out = static_cast<uInt>(buf.size());
    rc = deflate(&zs, rest.empty() ? Z_FINISH : Z_NO_FLUSH);
    if (rc == Z_STREAM_ERROR) {
      deflateEnd(&zs);
      throw std::runtime_error("gzip: deflate failed");
    }
    out.append(reinterpret_cast<const char*>(buf.data()), buf.size() - zs.avail_out);
  }
  deflateEnd(&zs);
  return out;
}

std::chrono::milliseconds backoff(int failures, std::chrono::milliseconds initial,
                                  std::chrono::milliseconds max, double rng01) {
  const int64_t limit = std::max<int64_t>(0, max.count());
  int64_t cap = std::clamp<int64_t>(initial.count(), 0, limit);
  for (int i = 1; i < failures && cap > 0 && cap < limit; ++i)
    cap = cap > limit / 2 ? limit : cap * 2;
  auto r = std::clamp(rng01, 0.0, std::nextafter(1.0, 0.0));
  // r * (cap + 1) maps [0, 1) onto the whole integer range [0, cap].
  auto delay = std::min(cap, static_cast<int64_t>(r * (static_cast<double>(cap) + 1)));
  return std::max(backoff_floor, milliseconds{delay});
}

std::optional<std::chrono::milliseconds> retry_after(std::string_view header,
                                                     std::chrono::system_clock::time_point now) {
  auto text = trim_ows(header);
  if (text.empty())
    return std::nullopt;
  if (is_digit(text.front()) || text.front() == '-')
    return delta_seconds(text);
  auto at = http_date(text, now);
  if (!at)
    return std::nullopt;
  if (*at <= now)
    return milliseconds{0};
  return std::chrono::ceil<milliseconds>(*at - now);
}

breaker::breaker(int threshold, std::chrono::milliseconds cooldown)
    : threshold_(std::max(1, threshold)), cooldown_(std::max(milliseconds{0}, cooldown)) {}

bool breaker::allow(time_point now) {
  switch (current(now)) {
  case state::closed:
    return true;
  case state::open:
    return false;
  case state::half_open:
    if (probe_out_)
      return false;
    probe_out_ = true;
    return true;
  }
  return false;
}

void breaker::success() {
  failures_ = 0;
  tripped_ = false;
  probe_out_ = false;
}

void breaker::failure(time_point now) {
  if (failures_ < INT_MAX)
    ++failures_;
  // Once tripped, any failure (the probe's or a late one) restarts the cooldown.
  if (tripped_ || failures_ >= threshold_) {
    tripped_ = true;
    opened_at_ = now;
    probe_out_ = false;
  }
}

breaker::state breaker::current(time_point now) const {
  if (!tripped_)
    return state::closed;
  return now - opened_at_ < cooldown_ ? state::open : state::half_open;
}

batch_decision decide(const batch_limits& limits, size_t pending_entries, size_t pending_bytes,
                      std::chrono::milliseconds oldest_age) {
  if (pending_entries == 0)
    return {false, limits.max_wait};
  if (pending_entries >= limits.max_entries || pending_bytes >= limits.max_bytes ||
      oldest_age >= limits.max_wait)
    return {true, milliseconds{0}};
  return {false, limits.max_wait - std::max(milliseconds{0}, oldest_age)};
}

outcome classify(unsigned status) {
  if (status >= 200 && status < 300)
    return outcome::ok;
  // What Loki says about the batch itself (malformed, out of order, too
  // large) will not change on a retry: skip it. Anything else — a bad token
  // (401/403), a wrong URL or proxy (404, 3xx), an outage — is about the
  // sink: keep the lines and retry behind the breaker until it is fixed.
  if (status == 400 || status == 413 || status == 422)
    return outcome::drop;
  return outcome::retry;
}

} // namespace troupe::loki
