#include "runtime/ground/logging.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <mutex>
#include <unordered_map>

#include <spdlog/details/log_msg.h>
#include <spdlog/formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace troupe::logging {

namespace {

thread_local std::string tl_request_id;

/// RFC 3339 UTC with microseconds, e.g. 2026-11-22T05:00:00.123456Z.
void append_timestamp(std::string& out, spdlog::log_clock::time_point tp) {
  using namespace std::chrono;
  auto since = tp.time_since_epoch();
  auto secs = duration_cast<seconds>(since);
  auto micros = duration_cast<microseconds>(since - secs).count();
  std::time_t t = secs.count();
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  auto n = std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                         tm.tm_sec, static_cast<long long>(micros));
  out.append(buf, static_cast<size_t>(n));
}

std::string_view level_name(spdlog::level::level_enum lvl) {
  switch (lvl) {
  case spdlog::level::trace:
    return "trace";
  case spdlog::level::debug:
    return "debug";
  case spdlog::level::info:
    return "info";
  case spdlog::level::warn:
    return "warn";
  case spdlog::level::err:
    return "error";
  case spdlog::level::critical:
    return "critical";
  default:
    return "off";
  }
}

class structured_formatter final : public spdlog::formatter {
public:
  explicit structured_formatter(bool json) : json_(json) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string out;
    out.reserve(160 + msg.payload.size());
    std::string_view payload(msg.payload.data(), msg.payload.size());
    std::string_view logger(msg.logger_name.data(), msg.logger_name.size());
    const auto& rid = tl_request_id;
    if (json_) {
      out += "{\"timestamp\":\"";
      append_timestamp(out, msg.time);
      out += "\",\"level\":\"";
      out += level_name(msg.level);
      out += "\",\"logger\":\"";
      append_json_escaped(out, logger);
      out += "\",\"message\":\"";
      append_json_escaped(out, payload);
      out += '"';
      if (!rid.empty()) {
        out += ",\"request_id\":\"";
        append_json_escaped(out, rid);
        out += '"';
      }
      out += "}\n";
    } else {
      append_timestamp(out, msg.time);
      out += ' ';
      auto lvl = level_name(msg.level);
      out += lvl;
      out.append(lvl.size() < 5 ? 5 - lvl.size() : 0, ' ');
      out += " [";
      out += logger;
      out += "] ";
      out += payload;
      if (!rid.empty()) {
        out += " request_id=";
        out += rid;
      }
      out += '\n';
    }
    dest.append(out.data(), out.data() + out.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<structured_formatter>(json_);
  }

private:
  bool json_;
};

/// Copies lines into the capture buffer when capturing is on.
class capture_sink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  /// Buffers lines until start(): what troupe logs before its pipeline
  /// runs (binding, opening the store) is shipped too.
  void arm(size_t capacity) {
    std::lock_guard<std::mutex> guard{buf_mtx_};
    if (on_)
      return;
    capacity_ = capacity;
    on_ = true;
  }
  void start(size_t capacity, std::function<void()> notify, std::vector<std::string> excluded) {
    std::function<void()> pending;
    {
      std::lock_guard<std::mutex> guard{buf_mtx_};
      capacity_ = capacity;
      notify_ = std::move(notify);
      excluded_ = std::move(excluded);
      on_ = true;
      buf_.erase(std::remove_if(buf_.begin(), buf_.end(),
                                [&](const captured_line& l) {
                                  return std::find(excluded_.begin(), excluded_.end(), l.logger) !=
                                         excluded_.end();
                                }),
                 buf_.end());
      if (!buf_.empty())
        pending = notify_;
    }
    if (pending)
      pending();
  }

  void stop() {
    std::lock_guard<std::mutex> guard{buf_mtx_};
    on_ = false;
    buf_.clear();
    notify_ = nullptr;
  }

  std::vector<captured_line> take(uint64_t& dropped) {
    std::lock_guard<std::mutex> guard{buf_mtx_};
    dropped = dropped_;
    dropped_ = 0;
    std::vector<captured_line> out;
    out.swap(buf_);
    return out;
  }

protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    std::function<void()> notify;
    {
      std::lock_guard<std::mutex> guard{buf_mtx_};
      if (!on_)
        return;
      std::string logger(msg.logger_name.data(), msg.logger_name.size());
      if (std::find(excluded_.begin(), excluded_.end(), logger) != excluded_.end())
        return;
      if (buf_.size() >= capacity_) {
        buf_.erase(buf_.begin());
        ++dropped_;
      }
      captured_line line;
      line.ts_ns =
          std::chrono::duration_cast<std::chrono::nanoseconds>(msg.time.time_since_epoch()).count();
      line.level = std::string{level_name(msg.level)};
      line.logger = std::move(logger);
      line.message.assign(msg.payload.data(), msg.payload.size());
      line.request_id = tl_request_id;
      buf_.push_back(std::move(line));
      if (buf_.size() == 1)
        notify = notify_;
    }
    if (notify)
      notify();
  }

  void flush_() override {}

private:
  std::mutex buf_mtx_;
  bool on_ = false;
  size_t capacity_ = 0;
  uint64_t dropped_ = 0;
  std::function<void()> notify_;
  std::vector<std::string> excluded_;
  std::vector<captured_line> buf_;
};

struct registry {
  std::mutex mtx;
  spdlog::sink_ptr sink;
  std::shared_ptr<capture_sink> capture = std::make_shared<capture_sink>();
  spdlog::level::level_enum level = spdlog::level::info;
  bool json = false;
  std::unordered_map<std::string, std::shared_ptr<spdlog::logger>> loggers;

  void ensure_sink() {
    if (!sink) {
      sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
      sink->set_formatter(std::make_unique<structured_formatter>(json));
    }
  }
};

registry& reg() {
  static registry r;
  return r;
}

} // namespace

void setup(const std::string& level, const std::string& format) {
  auto& r = reg();
  std::lock_guard<std::mutex> guard{r.mtx};
  r.level = spdlog::level::from_str(level);
  r.json = format == "json";
  r.ensure_sink();
  r.sink->set_formatter(std::make_unique<structured_formatter>(r.json));
  for (auto& [name, lg] : r.loggers)
    lg->set_level(r.level);
  r.capture->arm(1024);
}

std::shared_ptr<spdlog::logger> get(const std::string& component) {
  auto& r = reg();
  std::lock_guard<std::mutex> guard{r.mtx};
  if (auto i = r.loggers.find(component); i != r.loggers.end())
    return i->second;
  r.ensure_sink();
  auto lg = std::make_shared<spdlog::logger>(component, spdlog::sinks_init_list{r.sink, r.capture});
  lg->set_level(r.level);
  // A crash must not eat the lines that explain it.
  lg->flush_on(spdlog::level::trace);
  r.loggers.emplace(component, lg);
  return lg;
}

void start_capture(size_t capacity, std::function<void()> notify,
                   std::vector<std::string> excluded) {
  reg().capture->start(capacity, std::move(notify), std::move(excluded));
}

void stop_capture() {
  reg().capture->stop();
}

std::vector<captured_line> take_captured(uint64_t& dropped) {
  return reg().capture->take(dropped);
}

const std::string& current_request_id() {
  return tl_request_id;
}

request_scope::request_scope(std::string id) : previous_(std::move(tl_request_id)) {
  tl_request_id = std::move(id);
}

request_scope::~request_scope() {
  tl_request_id = std::move(previous_);
}

void append_json_escaped(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  size_t i = 0;
  const auto n = s.size();
  while (i < n) {
    // Runs of plain ASCII are copied in one go.
    size_t j = i;
    while (j < n) {
      auto c = static_cast<unsigned char>(s[j]);
      if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80)
        break;
      ++j;
    }
    out.append(s.data() + i, j - i);
    i = j;
    if (i == n)
      break;
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 0xf];
      }
      ++i;
      continue;
    }
    // A UTF-8 sequence: copied when well-formed, else one U+FFFD per bad byte
    // (a JSON parser refuses invalid UTF-8, so passing it on breaks the document).
    size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    bool ok = len != 0 && c <= 0xf4 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k)
      ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    if (ok && len >= 3) {
      auto c1 = static_cast<unsigned char>(s[i + 1]);
      if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0) || (c == 0xf0 && c1 < 0x90) ||
          (c == 0xf4 && c1 >= 0x90))
        ok = false; // overlong, surrogate or beyond U+10FFFF
    }
    if (ok) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\xef\xbf\xbd";
      ++i;
    }
  }
}

} // namespace troupe::logging
