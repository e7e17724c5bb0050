#include "persistence/logs.hpp"

#include <nlohmann/json.hpp>

#include "persistence/lmdb_env.hpp"
#include "runtime/clock.hpp"

namespace troupe::persistence {

using nlohmann::json;

std::string encode(const log_record& r) {
  json j{{"ts", r.ts_ns},          {"line", r.line},     {"stream", r.stream},
         {"level", r.level},       {"service", r.service}, {"instance", r.instance},
         {"source", r.source},     {"request_id", r.request_id}, {"namespace", r.ns},
         {"node", r.node}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

log_record decode_log_record(uint64_t seq, std::string_view value) {
  log_record r;
  r.seq = seq;
  auto j = json::parse(value, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return r;
  r.ts_ns = j.value("ts", int64_t{0});
  r.line = j.value("line", "");
  r.stream = j.value("stream", uint8_t{1});
  r.level = j.value("level", "");
  r.service = j.value("service", "");
  r.instance = j.value("instance", "");
  r.source = j.value("source", "");
  r.request_id = j.value("request_id", "");
  r.ns = j.value("namespace", "");
  r.node = j.value("node", "");
  return r;
}

bool log_query::matches(const log_record& r) const {
  auto eq = [](const std::string& want, const std::string& have) {
    return want.empty() || want == have;
  };
  return eq(service, r.service) && eq(instance, r.instance) && eq(level, r.level)
         && eq(request_id, r.request_id) && eq(source, r.source)
         && (since_ns == 0 || r.ts_ns >= since_ns) && (until_ns == 0 || r.ts_ns <= until_ns);
}

std::vector<log_record> query_logs(const lmdb_env& env, const log_query& q, uint64_t after,
                                   size_t limit, uint64_t& scanned_to) {
  std::vector<log_record> out;
  scanned_to = after;
  env.read([&](txn& t) {
    t.scan("logs", seq_key(after + 1), [&](std::string_view k, std::string_view v) {
      auto r = decode_log_record(seq_from_key(k), v);
      scanned_to = r.seq;
      if (q.until_ns != 0 && r.ts_ns > q.until_ns)
        return false;  // seq order is time order
      if (q.matches(r))
        out.push_back(std::move(r));
      return out.size() < limit;
    });
  });
  return out;
}

std::vector<log_record> read_logs_after(const lmdb_env& env, uint64_t after, size_t limit,
                                        size_t max_bytes) {
  std::vector<log_record> out;
  size_t bytes = 0;
  env.read([&](txn& t) {
    t.scan("logs", seq_key(after + 1), [&](std::string_view k, std::string_view v) {
      auto r = decode_log_record(seq_from_key(k), v);
      bytes += r.line.size();
      if (!out.empty() && bytes > max_bytes)
        return false;
      out.push_back(std::move(r));
      return out.size() < limit;
    });
  });
  return out;
}

std::string to_api_json(const log_record& r) {
  json j{{"seq", r.seq},
         {"ts", rfc3339(r.ts_ns)},
         {"ts_ns", std::to_string(r.ts_ns)},
         {"line", r.line},
         {"stream", r.stream == 2 ? "stderr" : "stdout"},
         {"level", r.level},
         {"labels",
          {{"service", r.service},
           {"instance", r.instance},
           {"namespace", r.ns},
           {"level", r.level},
           {"source", r.source},
           {"node", r.node}}}};
  if (!r.request_id.empty())
    j["request_id"] = r.request_id;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

} // namespace troupe::persistence
