#include "persistence/events.hpp"

#include <nlohmann/json.hpp>

#include "persistence/lmdb_env.hpp"

namespace troupe::persistence {

using nlohmann::json;

std::string encode_stored(const event& e) {
  json j{{"ts_ns", e.ts_ns}, {"type", e.type}, {"node", e.node}, {"data", e.data}};
  return j.dump();
}

event decode_stored(uint64_t seq, std::string_view value) {
  event e;
  e.seq = seq;
  auto j = json::parse(value, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    e.type = "corrupt";
    return e;
  }
  e.ts_ns = j.value("ts_ns", int64_t{0});
  e.type = j.value("type", std::string{});
  e.node = j.value("node", std::string{});
  e.data = j.value("data", std::string{"{}"});
  return e;
}

std::vector<event> read_events(const lmdb_env& env, uint64_t since, size_t limit) {
  std::vector<event> result;
  if (limit == 0 || since == UINT64_MAX)
    return result;
  env.read([&](txn& t) {
    t.scan("events", seq_key(since + 1), [&](std::string_view k, std::string_view v) {
      result.push_back(decode_stored(seq_from_key(k), v));
      return result.size() < limit;
    });
  });
  return result;
}

std::optional<write_op> plan_event_trim(const lmdb_env& env, int64_t now_ns, int64_t max_age_ns,
                                        size_t max_events, bool& more) {
  more = false;
  std::optional<write_op> op;
  env.read([&](txn& t) {
    auto newest = t.last_seq("events");
    uint64_t first = 0;
    size_t n = 0;
    std::string stop;
    t.scan("events", "", [&](std::string_view k, std::string_view v) {
      auto seq = seq_from_key(k);
      if (seq >= newest || decode_stored(seq, v).ts_ns >= now_ns - max_age_ns) {
        stop = std::string{k};
        return false;
      }
      if (n == max_events) {
        more = true;
        stop = std::string{k};
        return false;
      }
      if (n++ == 0)
        first = seq;
      return true;
    });
    if (n > 0)
      op = write_op{write_op::erase_range, "events", seq_key(first), stop};
  });
  return op;
}

} // namespace troupe::persistence
