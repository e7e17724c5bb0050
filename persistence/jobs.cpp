#include "persistence/jobs.hpp"

#include <atomic>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/clock.hpp"

namespace troupe::persistence {

using nlohmann::json;

namespace {

std::string log_prefix(const std::string& job_id) {
  return job_id + '/';
}

} // namespace

bool is_terminal(std::string_view s) {
  return s == job_status::succeeded || s == job_status::failed || s == job_status::cancelled ||
         s == job_status::timed_out || s == job_status::lost;
}

std::string new_job_id() {
  // UUIDv7: 48-bit Unix milliseconds, then random bits; sorts by creation.
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static std::atomic<uint64_t> last_ms{0};
  static std::atomic<uint16_t> counter{0};
  auto ms = static_cast<uint64_t>(now_ns() / 1'000'000);
  // Ids of one millisecond stay ordered: a 12-bit counter fills rand_a.
  uint16_t seq = 0;
  if (last_ms.exchange(ms) == ms)
    seq = static_cast<uint16_t>(++counter & 0x0fff);
  else
    counter = 0;
  uint64_t hi = (ms << 16) | 0x7000 | seq;
  uint64_t lo = (rng() & 0x3fffffffffffffffull) | 0x8000000000000000ull;
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xffff), static_cast<unsigned>(hi & 0xffff),
                static_cast<unsigned>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xffffffffffffull));
  return buf;
}

std::string encode(const job_record& r) {
  json j{{"id", r.id},
         {"name", r.name},
         {"status", r.status},
         {"spec", r.spec},
         {"priority", r.priority},
         {"labels", r.labels},
         {"retries", r.retries},
         {"attempt", r.attempt},
         {"node", r.node},
         {"request_id", r.request_id},
         {"submitted_by", r.submitted_by},
         {"reason", r.reason},
         {"workspace", r.workspace},
         {"queued_at", r.queued_at},
         {"started_at", r.started_at},
         {"ended_at", r.ended_at},
         {"not_before", r.not_before},
         {"pgid", r.pgid}};
  j["exit_code"] = r.exit_code ? json(*r.exit_code) : json(nullptr);
  j["signal"] = r.signal ? json(*r.signal) : json(nullptr);
  j["success"] = r.success ? json(*r.success) : json(nullptr);
  return j.dump();
}

job_record decode_job(std::string_view value) {
  auto j = json::parse(value);
  job_record r;
  r.id = j.at("id").get<std::string>();
  r.name = j.value("name", "");
  r.status = j.value("status", job_status::lost);
  r.spec = j.value("spec", "{}");
  r.priority = j.value("priority", 50);
  r.labels = j.value("labels", std::map<std::string, std::string>{});
  r.retries = j.value("retries", 0);
  r.attempt = j.value("attempt", 1);
  r.node = j.value("node", "");
  r.request_id = j.value("request_id", "");
  r.submitted_by = j.value("submitted_by", "");
  r.reason = j.value("reason", "");
  r.workspace = j.value("workspace", "");
  r.queued_at = j.value("queued_at", int64_t{0});
  r.started_at = j.value("started_at", int64_t{0});
  r.ended_at = j.value("ended_at", int64_t{0});
  r.not_before = j.value("not_before", int64_t{0});
  r.pgid = j.value("pgid", int64_t{0});
  if (j.contains("exit_code") && j["exit_code"].is_number_integer())
    r.exit_code = j["exit_code"].get<int>();
  if (j.contains("signal") && j["signal"].is_number_integer())
    r.signal = j["signal"].get<int>();
  if (j.contains("success") && j["success"].is_boolean())
    r.success = j["success"].get<bool>();
  return r;
}

std::optional<job_record> get_job(const lmdb_env& env, const std::string& id) {
  auto raw = env.read([&](txn& t) { return t.get("jobs", id); });
  if (!raw)
    return std::nullopt;
  return decode_job(*raw);
}

std::vector<job_record> list_jobs(const lmdb_env& env, const job_filter& filter,
                                  const std::string& cursor, size_t limit, std::string& next_cursor,
                                  size_t max_scan, size_t max_bytes) {
  std::vector<job_record> out;
  next_cursor.clear();
  size_t looked = 0;
  size_t bytes = 0;
  std::string last_key;
  env.read([&](txn& t) {
    t.scan_reverse("jobs", cursor, [&](std::string_view k, std::string_view v) {
      if (looked == max_scan) {
        next_cursor = last_key; // another record follows: the next page starts here
        return false;
      }
      ++looked;
      last_key.assign(k);
      auto r = decode_job(v);
      if (filter.since_ns != 0 && r.queued_at < filter.since_ns)
        return false; // ids are time-ordered: everything further is older
      if (filter.status && r.status != *filter.status)
        return true;
      for (auto& [key, want] : filter.labels) {
        auto i = r.labels.find(key);
        if (i == r.labels.end() || i->second != want)
          return true;
      }
      if (out.size() == limit || bytes >= max_bytes) {
        next_cursor = out.back().id;
        return false;
      }
      bytes += v.size();
      out.push_back(std::move(r));
      return true;
    });
  });
  return out;
}

void for_each_job(const lmdb_env& env, const std::function<bool(const job_record&)>& fn) {
  env.read([&](txn& t) {
    t.scan("jobs", "", [&](std::string_view, std::string_view v) { return fn(decode_job(v)); });
  });
}

std::string log_key(const std::string& job_id, uint64_t seq) {
  return log_prefix(job_id) + seq_key(seq);
}

namespace {

struct index_entry {
  uint64_t first_seq = 0; ///< per-job
  uint64_t first_global = 0;
  uint64_t count = 0;
};

bool decode_index(std::string_view prefix, std::string_view k, std::string_view v, index_entry& e) {
  if (k.size() != prefix.size() + 8 || k.compare(0, prefix.size(), prefix) != 0 || v.size() < 12)
    return false;
  e.first_seq = seq_from_key(k.substr(prefix.size()));
  e.first_global = 0;
  for (int i = 7; i >= 0; --i)
    e.first_global = (e.first_global << 8) | static_cast<unsigned char>(v[static_cast<size_t>(i)]);
  e.count = 0;
  for (int i = 11; i >= 8; --i)
    e.count = (e.count << 8) | static_cast<unsigned char>(v[static_cast<size_t>(i)]);
  return true;
}

} // namespace

uint64_t read_log_lines(const lmdb_env& env, const std::string& job_id, uint64_t after,
                        size_t limit,
                        const std::function<void(uint64_t seq, const stored_line&)>& fn) {
  return read_log_lines_until(env, job_id, after, limit, [&](uint64_t seq, const stored_line& s) {
    fn(seq, s);
    return true;
  });
}

uint64_t read_log_lines_until(const lmdb_env& env, const std::string& job_id, uint64_t after,
                              size_t limit,
                              const std::function<bool(uint64_t seq, const stored_line&)>& fn) {
  auto prefix = log_prefix(job_id);
  // No seq comes after the largest (a client's Last-Event-ID can be anything).
  if (after >= UINT64_MAX - 1 || limit == 0)
    return after;
  // Per-job seqs are dense (1, 2, ...): this call covers (after, budget_end].
  auto budget_end = after > UINT64_MAX - limit ? UINT64_MAX : after + limit;
  uint64_t covered = after;
  // The index goes on past budget_end: the call covered all of its budget,
  // also where a batch is missing (holes do not end a read early).
  bool beyond = false;
  bool refused = false;
  env.read([&](txn& t) {
    // The index entry holding after + 1 is the last one at or before it.
    std::vector<index_entry> ranges;
    t.scan_reverse("job_logs", log_key(job_id, after + 2),
                   [&](std::string_view k, std::string_view v) {
                     index_entry e;
                     if (decode_index(prefix, k, v, e) && e.first_seq + e.count > after + 1)
                       ranges.push_back(e);
                     return false;
                   });
    size_t lines = 0;
    t.scan("job_logs", log_key(job_id, after + 2), [&](std::string_view k, std::string_view v) {
      index_entry e;
      if (!decode_index(prefix, k, v, e))
        return false;
      ranges.push_back(e);
      lines += e.count;
      return lines < limit;
    });
    for (auto& r : ranges) {
      if (r.first_seq + r.count - 1 > budget_end)
        beyond = true;
      auto lo = std::max(after + 1, r.first_seq);
      auto hi = std::min(r.first_seq + r.count - 1, budget_end);
      if (lo > hi)
        continue;
      auto first = r.first_global + (lo - r.first_seq);
      auto last = r.first_global + (hi - r.first_seq);
      // Lines the log retention already removed are simply not there.
      t.scan("logs", seq_key(first), [&](std::string_view k, std::string_view v) {
        auto g = seq_from_key(k);
        if (g > last)
          return false;
        stored_line s;
        if (!decode_stored(g, v, s))
          return true;
        auto seq = lo + (g - first);
        if (!fn(seq, s)) {
          refused = true;
          covered = seq - 1;
          return false;
        }
        return true;
      });
      if (refused)
        return;
      covered = hi;
      if (hi == budget_end)
        break;
    }
  });
  if (refused)
    return covered;
  return beyond ? budget_end : covered;
}

std::vector<log_entry> read_logs(const lmdb_env& env, const std::string& job_id, uint64_t after,
                                 size_t limit, uint64_t* covered) {
  std::vector<log_entry> out;
  auto to = read_log_lines(env, job_id, after, limit, [&](uint64_t seq, const stored_line& s) {
    out.push_back(log_entry{seq, s.ts_ns, s.stream, std::string{s.line}});
  });
  if (covered)
    *covered = to;
  return out;
}

log_purge purge_job_log_ops(const lmdb_env& env, const std::string& job_id, uint64_t max_lines) {
  log_purge out;
  auto prefix = log_prefix(job_id);
  std::string resume;            // the first index key left for the next purge
  std::set<uint64_t> label_sets; // the job's own: their instance is its id
  env.read([&](txn& t) {
    t.scan("job_logs", prefix, [&](std::string_view k, std::string_view v) {
      index_entry e;
      if (!decode_index(prefix, k, v, e))
        return false;
      if (out.lines > 0 && out.lines + e.count > max_lines) {
        resume = std::string{k};
        return false;
      }
      // A batch's lines share one label set: its first (kept) line names it.
      t.scan("logs", seq_key(e.first_global), [&](std::string_view lk, std::string_view lv) {
        stored_line s;
        if (seq_from_key(lk) < e.first_global + e.count && decode_stored(0, lv, s))
          label_sets.insert(s.labels);
        return false;
      });
      out.ops.push_back(write_op{write_op::erase_range, "logs", seq_key(e.first_global),
                                 seq_key(e.first_global + e.count)});
      out.lines += e.count;
      return true;
    });
    if (!resume.empty())
      return; // the label sets go with the last batch
    for (auto id : label_sets)
      if (auto raw = t.get("log_labels", seq_key(id));
          raw && decode_labels(*raw).instance == job_id)
        out.ops.push_back(write_op{write_op::erase, "log_labels", seq_key(id), {}});
  });
  out.complete = resume.empty();
  if (out.lines == 0 && out.ops.empty())
    return out; // no log left
  auto end = job_id + static_cast<char>('/' + 1);
  out.ops.push_back(
      write_op{write_op::erase_range, "job_logs", prefix, out.complete ? end : resume});
  return out;
}

uint64_t last_log_seq(const lmdb_env& env, const std::string& job_id) {
  uint64_t last = 0;
  auto prefix = log_prefix(job_id);
  env.read([&](txn& t) {
    // The key just past this job's range is prefix with '/' + 1.
    auto end = job_id + static_cast<char>('/' + 1);
    t.scan_reverse("job_logs", end, [&](std::string_view k, std::string_view v) {
      index_entry e;
      if (decode_index(prefix, k, v, e))
        last = e.first_seq + e.count - 1;
      return false;
    });
  });
  return last;
}

void append_api_json(std::string& out, uint64_t seq, const stored_line& s) {
  out += "{\"seq\":";
  out += std::to_string(seq);
  out += ",\"ts\":";
  append_json_string(out, rfc3339(s.ts_ns));
  out += s.stream == 2 ? ",\"stream\":\"stderr\",\"line\":" : ",\"stream\":\"stdout\",\"line\":";
  append_json_string(out, s.line);
  out += '}';
}

std::string to_api_json(const log_entry& e) {
  stored_line s;
  s.ts_ns = e.ts_ns;
  s.stream = e.stream;
  s.line = e.line;
  std::string out;
  append_api_json(out, e.seq, s);
  return out;
}

} // namespace troupe::persistence
