#include "actors/metrics/prometheus.hpp"

#include "http/http_client.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace troupe::prom {

namespace {

bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_metric_char(char c) {
  return is_alpha(c) || is_digit(c) || c == '_' || c == ':';
}

bool known_type(std::string_view type) {
  for (std::string_view t : {"counter", "gauge", "histogram", "summary", "untyped"})
    if (type == t)
      return true;
  return false;
}

/// Go's %e part of 'g' formatting: shortest digits, two-digit exponent at
/// least ("1.5e-07"); std::to_chars writes exactly that.
std::string scientific(double value) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  return {buf, res.ptr};
}

/// Go's %f part of 'g' formatting for -4 <= exponent < 6: the shortest
/// round-trip digits placed around the decimal point.
std::string fixed(double value) {
  auto sci = scientific(value);
  std::string out;
  size_t pos = 0;
  if (sci[pos] == '-') {
    out += '-';
    ++pos;
  }
  auto e = sci.find('e');
  std::string digits;
  for (size_t i = pos; i < e; ++i)
    if (sci[i] != '.')
      digits += sci[i];
  int exp = std::stoi(sci.substr(e + 1));
  if (exp < 0) {
    out += "0.";
    out.append(static_cast<size_t>(-exp - 1), '0');
    out += digits;
    return out;
  }
  auto int_digits = static_cast<size_t>(exp) + 1;
  if (digits.size() <= int_digits)
    return out + digits + std::string(int_digits - digits.size(), '0');
  return out + digits.substr(0, int_digits) + "." + digits.substr(int_digits);
}

std::string base64url(std::string_view data) {
  if (data.empty())
    return "=";
  auto out = http::base64(data);
  for (auto& c : out) {
    if (c == '+')
      c = '-';
    else if (c == '/')
      c = '_';
  }
  return out;
}

std::string percent_encode(std::string_view segment) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : segment) {
    if (is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      auto byte = static_cast<unsigned char>(c);
      out += '%';
      out += hex[byte >> 4];
      out += hex[byte & 0x0F];
    }
  }
  return out;
}

/// "/name/value" or "/name@base64/encoded". Dot segments would be collapsed
/// by path cleaning on the way, '/' would split the value, and an empty
/// segment would vanish: those take the base64 form.
void append_grouping_pair(std::string& out, std::string_view name, std::string_view value) {
  bool base64 =
      value.empty() || value == "." || value == ".." || value.find('/') != std::string_view::npos;
  out += '/';
  out += name;
  if (base64) {
    out += "@base64/";
    out += base64url(value);
  } else {
    out += '/';
    out += percent_encode(value);
  }
}

} // namespace

bool valid_metric_name(std::string_view name) {
  if (name.empty() || is_digit(name.front()))
    return false;
  for (char c : name)
    if (!is_metric_char(c))
      return false;
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || is_digit(name.front()) || name.substr(0, 2) == "__")
    return false;
  for (char c : name)
    if (!is_alpha(c) && !is_digit(c) && c != '_')
      return false;
  return true;
}

std::string sanitize_name(std::string_view name) {
  std::string out;
  if (name.empty() || is_digit(name.front()))
    out += '_';
  for (char c : name)
    out += is_metric_char(c) ? c : '_';
  return out;
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
    case '\\':
      out += "\\\\";
      break;
    case '"':
      out += "\\\"";
      break;
    case '\n':
      out += "\\n";
      break;
    default:
      out += c;
    }
  }
  return out;
}

std::string escape_help(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string format_value(double value) {
  if (std::isnan(value))
    return "NaN";
  if (std::isinf(value))
    return value > 0 ? "+Inf" : "-Inf";
  if (value == std::trunc(value) && std::fabs(value) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.0f", value);
    return buf;
  }
  // The exponent of the shortest round-trip digits picks the form, as in Go.
  auto sci = scientific(value);
  int exp = std::stoi(sci.substr(sci.find('e') + 1));
  if (exp < -4 || exp >= 6)
    return sci;
  return fixed(value);
}

// -- writer -------------------------------------------------------------------

bool writer::fail(std::string message) {
  if (error_.empty())
    error_ = std::move(message);
  return false;
}

void writer::family(std::string_view name, std::string_view type, std::string_view help) {
  if (!valid_metric_name(name)) {
    fail("invalid metric name \"" + std::string{name} + "\"");
    return;
  }
  if (!known_type(type)) {
    fail("unknown type \"" + std::string{type} + "\" for " + std::string{name});
    return;
  }
  if (families_.count(name) != 0) {
    fail("family " + std::string{name} + " declared twice");
    return;
  }
  families_.emplace(name);
  current_ = name;
  current_type_ = type;
  text_ += "# HELP ";
  text_ += name;
  if (!help.empty()) {
    text_ += ' ';
    text_ += escape_help(help);
  }
  text_ += "\n# TYPE ";
  text_ += name;
  text_ += ' ';
  text_ += type;
  text_ += '\n';
}

bool writer::check_sample(std::string_view name, const labels& l, bool histogram_call) {
  if (current_.empty())
    return fail("sample " + std::string{name} + " before any family");
  auto suffix_of = [&](std::string_view suffix) {
    return name.size() == current_.size() + suffix.size() &&
           name.substr(0, current_.size()) == current_ && name.substr(current_.size()) == suffix;
  };
  bool belongs = name == current_;
  if (histogram_call)
    belongs = belongs && current_type_ == "histogram";
  else if (current_type_ == "histogram")
    belongs = belongs || suffix_of("_bucket") || suffix_of("_sum") || suffix_of("_count");
  else if (current_type_ == "summary")
    belongs = belongs || suffix_of("_sum") || suffix_of("_count");
  if (!belongs)
    return fail(std::string{histogram_call ? "histogram " : "sample "} + std::string{name} +
                " does not belong to the current " + current_type_ + " family " + current_);
  for (size_t i = 0; i < l.size(); ++i) {
    if (!valid_label_name(l[i].first))
      return fail("invalid label name \"" + l[i].first + "\" on " + std::string{name});
    for (size_t j = 0; j < i; ++j)
      if (l[j].first == l[i].first)
        return fail("label " + l[i].first + " repeated on " + std::string{name});
  }
  return true;
}

void writer::write_sample(std::string_view name, const labels& l, std::string_view extra_label,
                          std::string_view extra_value, std::string_view value) {
  text_ += name;
  if (!l.empty() || !extra_label.empty()) {
    char sep = '{';
    auto pair = [&](std::string_view k, std::string_view v) {
      text_ += sep;
      text_ += k;
      text_ += "=\"";
      text_ += escape_label_value(v);
      text_ += '"';
      sep = ',';
    };
    for (const auto& [k, v] : l)
      pair(k, v);
    if (!extra_label.empty())
      pair(extra_label, extra_value);
    text_ += '}';
  }
  text_ += ' ';
  text_ += value;
  text_ += '\n';
}

void writer::sample(std::string_view name, const labels& l, double value) {
  if (check_sample(name, l, false))
    write_sample(name, l, {}, {}, format_value(value));
}

void writer::histogram(std::string_view name, const labels& l,
                       const std::vector<double>& upper_bounds,
                       const std::vector<uint64_t>& bucket_counts, double sum, uint64_t count) {
  if (!check_sample(name, l, true))
    return;
  std::string where = " in histogram " + std::string{name};
  for (const auto& [k, v] : l)
    if (k == "le") {
      fail("label le is reserved for buckets" + where);
      return;
    }
  if (upper_bounds.size() != bucket_counts.size()) {
    fail(std::to_string(upper_bounds.size()) + " bounds but " +
         std::to_string(bucket_counts.size()) + " bucket counts" + where);
    return;
  }
  uint64_t total = 0;
  for (size_t i = 0; i < upper_bounds.size(); ++i) {
    if (!std::isfinite(upper_bounds[i]) || (i > 0 && upper_bounds[i] <= upper_bounds[i - 1])) {
      fail("bounds must be finite and strictly increasing" + where);
      return;
    }
    if (bucket_counts[i] > count - total) {
      fail("buckets hold more than count=" + std::to_string(count) + where);
      return;
    }
    total += bucket_counts[i];
  }
  std::string bucket = std::string{name} + "_bucket";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < upper_bounds.size(); ++i) {
    cumulative += bucket_counts[i];
    write_sample(bucket, l, "le", format_value(upper_bounds[i]), std::to_string(cumulative));
  }
  write_sample(bucket, l, "le", "+Inf", std::to_string(count));
  write_sample(std::string{name} + "_sum", l, {}, {}, format_value(sum));
  write_sample(std::string{name} + "_count", l, {}, {}, std::to_string(count));
}

std::string writer::take() {
  std::string out = std::move(text_);
  *this = writer{};
  return out;
}

std::string pushgateway_path(std::string_view job, const labels& grouping) {
  std::string out = "/metrics";
  append_grouping_pair(out, "job", job);
  for (const auto& [name, value] : grouping)
    append_grouping_pair(out, name, value);
  return out;
}

} // namespace troupe::prom
