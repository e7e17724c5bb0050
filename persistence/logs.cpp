#include "persistence/logs.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "persistence/jobs.hpp"
#include "persistence/lmdb_env.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/log_level.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe::persistence {

namespace {

constexpr size_t record_header = 8 + 1 + 8 + 1; // ts, stream, labels, level length

void put_le(char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i)
    p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

void append_le(std::string& out, uint64_t v, int bytes) {
  char buf[8];
  put_le(buf, v, bytes);
  out.append(buf, static_cast<size_t>(bytes));
}

uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

/// Reads the little-endian integer of `bytes` at the front of `in`.
bool take(std::string_view& in, int bytes, uint64_t& v) {
  if (in.size() < static_cast<size_t>(bytes))
    return false;
  v = get_le(in.data(), bytes);
  in.remove_prefix(static_cast<size_t>(bytes));
  return true;
}

bool take_string(std::string_view& in, int len_bytes, std::string_view& s) {
  uint64_t n = 0;
  if (!take(in, len_bytes, n) || in.size() < n)
    return false;
  s = in.substr(0, n);
  in.remove_prefix(n);
  return true;
}

MDB_val to_val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}

void check(int rc, const char* what) {
  if (rc != MDB_SUCCESS)
    throw lmdb_error(what, rc);
}

/// FNV-1a, then a final mix: a stable 64-bit id for a label set.
uint64_t hash64(std::string_view enc) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : enc) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h == 0 ? 1 : h;
}

/// The id of a label set, stored on first use; an id taken by another set
/// (a hash collision) moves on to the next free one.
uint64_t intern_labels(txn& t, std::string_view enc) {
  auto id = hash64(enc);
  for (;;) {
    auto key = seq_key(id);
    auto found = t.get("log_labels", key);
    if (!found) {
      t.put("log_labels", key, enc);
      return id;
    }
    if (*found == enc)
      return id;
    ++id;
  }
}

} // namespace

// -- label sets --------------------------------------------------------------------

std::string encode_labels(const log_labels& l) {
  std::string out;
  for (auto* s : {&l.service, &l.instance, &l.source, &l.request_id, &l.ns, &l.node}) {
    append_le(out, s->size(), 2);
    out.append(*s);
  }
  return out;
}

log_labels decode_labels(std::string_view v) {
  log_labels l;
  for (auto* s : {&l.service, &l.instance, &l.source, &l.request_id, &l.ns, &l.node}) {
    std::string_view part;
    if (!take_string(v, 2, part))
      break;
    s->assign(part);
  }
  return l;
}

// -- writing -------------------------------------------------------------------------

log_op_builder::log_op_builder(const log_labels& labels) {
  auto enc = encode_labels(labels);
  append_le(buf_, enc.size(), 4);
  buf_ += enc;
}

void log_op_builder::add(int64_t ts_ns, uint8_t stream, std::string_view level,
                         std::string_view line) {
  level = level.substr(0, 255);
  append_le(buf_, static_cast<uint64_t>(ts_ns), 8);
  buf_ += static_cast<char>(stream);
  buf_ += static_cast<char>(level.size());
  buf_.append(level);
  append_le(buf_, line.size(), 4);
  buf_.append(line);
  ++count_;
}

std::string log_op_builder::take() {
  count_ = 0;
  return std::move(buf_);
}

/// The highest global seq ever given, kept in `meta` so that numbers are
/// never handed out twice after retention or a purge removed the newest lines
/// (sink cursors, job indexes and Last-Event-IDs point at them).
constexpr const char* high_water_key = "logs.last_seq";

uint64_t log_high_water(const txn& t) {
  uint64_t hw = 0;
  if (auto v = t.get("meta", high_water_key))
    hw = std::strtoull(v->c_str(), nullptr, 10);
  return std::max(hw, t.last_seq("logs"));
}

std::pair<uint64_t, uint32_t> append_log_op(txn& t, std::string_view index_key,
                                            std::string_view op) {
  std::string_view labels;
  if (!take_string(op, 4, labels))
    throw std::invalid_argument("malformed log batch");
  // A job batch sent again (its first try timed out but committed) is
  // stored once: its index entry says where it went.
  if (!index_key.empty())
    if (auto entry = t.get("job_logs", index_key); entry && entry->size() >= 12)
      return {get_le(entry->data(), 8), static_cast<uint32_t>(get_le(entry->data() + 8, 4))};
  // The request id goes with each line, the rest of the set is interned.
  auto set = decode_labels(labels);
  std::string request_id = std::move(set.request_id);
  set.request_id.clear();
  if (request_id.size() > 255)
    request_id.resize(255);
  auto labels_id = intern_labels(t, encode_labels(set));
  uint8_t rid_flag = request_id.empty() ? 0 : 0x80;
  size_t rid_bytes = request_id.empty() ? 0 : 1 + request_id.size();
  auto first = log_high_water(t) + 1;
  auto seq = first;
  auto dbi = t.dbi("logs");
  while (!op.empty()) {
    uint64_t ts = 0, stream = 0, level_len = 0, line_len = 0;
    if (!take(op, 8, ts) || !take(op, 1, stream) || !take(op, 1, level_len) ||
        op.size() < level_len)
      throw std::invalid_argument("malformed log batch");
    auto level = op.substr(0, level_len);
    op.remove_prefix(level_len);
    if (!take(op, 4, line_len) || op.size() < line_len)
      throw std::invalid_argument("malformed log batch");
    auto line = op.substr(0, line_len);
    op.remove_prefix(line_len);
    // Written in place into LMDB's page: no intermediate buffer per line.
    auto key = seq_key(seq);
    auto k = to_val(key);
    MDB_val v{record_header + level.size() + rid_bytes + line.size(), nullptr};
    check(mdb_put(t.raw(), dbi, &k, &v, MDB_APPEND | MDB_RESERVE), "mdb_put(logs)");
    auto p = static_cast<char*>(v.mv_data);
    put_le(p, ts, 8);
    p[8] = static_cast<char>((stream & 0x7f) | rid_flag);
    put_le(p + 9, labels_id, 8);
    p[17] = static_cast<char>(level.size());
    auto at = p + record_header;
    std::memcpy(at, level.data(), level.size());
    at += level.size();
    if (rid_flag != 0) {
      *at++ = static_cast<char>(request_id.size());
      std::memcpy(at, request_id.data(), request_id.size());
      at += request_id.size();
    }
    std::memcpy(at, line.data(), line.size());
    ++seq;
  }
  auto count = static_cast<uint32_t>(seq - first);
  if (count > 0)
    t.put("meta", high_water_key, std::to_string(seq - 1));
  if (!index_key.empty() && count > 0) {
    std::string entry;
    append_le(entry, first, 8);
    append_le(entry, count, 4);
    t.put("job_logs", index_key, entry);
  }
  return {first, count};
}

void visit_log_op(std::string_view op, uint64_t first,
                  const std::function<void(const stored_line&, const log_labels&)>& fn) {
  std::string_view enc;
  if (!take_string(op, 4, enc))
    return;
  auto l = decode_labels(enc);
  while (!op.empty()) {
    uint64_t ts = 0, stream = 0;
    std::string_view level, line;
    if (!take(op, 8, ts) || !take(op, 1, stream) || !take_string(op, 1, level) ||
        !take_string(op, 4, line))
      break;
    stored_line s;
    s.seq = first++;
    s.ts_ns = static_cast<int64_t>(ts);
    s.stream = static_cast<uint8_t>(stream);
    s.level = level;
    s.line = line;
    fn(s, l);
  }
}

std::vector<log_record> decode_log_op(std::string_view op, uint64_t first) {
  std::vector<log_record> out;
  visit_log_op(op, first,
               [&](const stored_line& s, const log_labels& l) { out.push_back(to_record(s, l)); });
  return out;
}

uint64_t append_log_records(txn& t, const std::vector<log_record>& records) {
  uint64_t last = 0;
  size_t i = 0;
  while (i < records.size()) {
    auto labels_of = [](const log_record& r) {
      return log_labels{r.service, r.instance, r.source, r.request_id, r.ns, r.node};
    };
    auto labels = labels_of(records[i]);
    log_op_builder b{labels};
    auto enc = encode_labels(labels);
    for (; i < records.size() && encode_labels(labels_of(records[i])) == enc; ++i)
      b.add(records[i].ts_ns, records[i].stream, records[i].level, records[i].line);
    auto [first, n] = append_log_op(t, {}, b.take());
    last = first + n - 1;
  }
  return last;
}

// -- reading ---------------------------------------------------------------------------

bool decode_stored(uint64_t seq, std::string_view v, stored_line& out) {
  if (v.size() < record_header)
    return false;
  out.seq = seq;
  out.ts_ns = static_cast<int64_t>(get_le(v.data(), 8));
  auto stream = static_cast<uint8_t>(v[8]);
  out.stream = stream & 0x7f;
  out.labels = get_le(v.data() + 9, 8);
  size_t level_len = static_cast<unsigned char>(v[17]);
  if (v.size() < record_header + level_len)
    return false;
  out.level = v.substr(record_header, level_len);
  auto rest = v.substr(record_header + level_len);
  out.request_id = {};
  if (stream & 0x80) {
    if (rest.empty())
      return false;
    size_t n = static_cast<unsigned char>(rest[0]);
    if (rest.size() < 1 + n)
      return false;
    out.request_id = rest.substr(1, n);
    rest.remove_prefix(1 + n);
  }
  out.line = rest;
  return true;
}

const log_labels& label_cache::get(const txn& t, uint64_t id) {
  if (auto i = sets_.find(id); i != sets_.end())
    return i->second;
  if (sets_.size() >= capacity_)
    sets_.clear();
  auto raw = t.get("log_labels", seq_key(id));
  return sets_.emplace(id, raw ? decode_labels(*raw) : log_labels{}).first->second;
}

void scan_logs(const txn& t, uint64_t after, const std::function<bool(const stored_line&)>& fn) {
  if (after == UINT64_MAX)
    return;
  t.scan("logs", seq_key(after + 1), [&](std::string_view k, std::string_view v) {
    stored_line s;
    if (!decode_stored(seq_from_key(k), v, s))
      return true;
    return fn(s);
  });
}

log_record to_record(const stored_line& s, const log_labels& l) {
  log_record r;
  r.seq = s.seq;
  r.ts_ns = s.ts_ns;
  r.line.assign(s.line);
  r.stream = s.stream;
  r.level.assign(s.level);
  r.service = l.service;
  r.instance = l.instance;
  r.source = l.source;
  r.request_id.assign(request_id_of(s, l));
  r.ns = l.ns;
  r.node = l.node;
  return r;
}

bool log_query::matches(const log_labels& l, const stored_line& s) const {
  auto eq = [](std::string_view want, std::string_view have) {
    return want.empty() || want == have;
  };
  return eq(request_id, request_id_of(s, l)) && eq(service, l.service) &&
         eq(instance, l.instance) && eq(source, l.source);
}

bool log_query::matches(const stored_line& s) const {
  return (level.empty() || level == s.level) && (since_ns == 0 || s.ts_ns >= since_ns) &&
         (until_ns == 0 || s.ts_ns <= until_ns);
}

bool log_query::matches(const log_record& r) const {
  auto eq = [](const std::string& want, const std::string& have) {
    return want.empty() || want == have;
  };
  return eq(service, r.service) && eq(instance, r.instance) && eq(level, r.level) &&
         eq(request_id, r.request_id) && eq(source, r.source) &&
         (since_ns == 0 || r.ts_ns >= since_ns) && (until_ns == 0 || r.ts_ns <= until_ns);
}

namespace {

/// Calls `fn(line, labels)` for matching lines with seq > `after` until it
/// returns false or `max_scan` lines were looked at; returns the last seq
/// looked at. No early stop at `until`: lines are in seq order, and seq order
/// is only roughly time order (troupe's own lines arrive late, batches retry).
template <class F>
uint64_t scan_matching(const lmdb_env& env, const log_query& q, uint64_t after, size_t max_scan,
                       F fn) {
  uint64_t scanned_to = after;
  size_t scanned = 0;
  bool stopped = false;
  label_cache labels;
  env.read([&](txn& t) {
    scan_logs(t, after, [&](const stored_line& s) {
      scanned_to = s.seq;
      if (q.matches(s)) {
        auto& l = labels.get(t, s.labels);
        if (q.matches(l, s) && !fn(s, l))
          return !(stopped = true);
      }
      if (++scanned < max_scan)
        return true;
      return !(stopped = true);
    });
    // Ran off the end: everything ever numbered was looked at (the newest
    // lines may be gone; paging must not stay before them).
    if (!stopped)
      scanned_to = std::max(scanned_to, log_high_water(t));
  });
  return scanned_to;
}

} // namespace

std::vector<log_record> query_logs(const lmdb_env& env, const log_query& q, uint64_t after,
                                   size_t limit, uint64_t& scanned_to, size_t max_scan) {
  std::vector<log_record> out;
  scanned_to =
      scan_matching(env, q, after, max_scan, [&](const stored_line& s, const log_labels& l) {
        out.push_back(to_record(s, l));
        return out.size() < limit;
      });
  return out;
}

size_t query_logs_ndjson(const lmdb_env& env, const log_query& q, uint64_t after, size_t limit,
                         uint64_t& scanned_to, std::string& out, size_t max_scan,
                         size_t max_bytes) {
  size_t n = 0;
  scanned_to =
      scan_matching(env, q, after, max_scan, [&](const stored_line& s, const log_labels& l) {
        append_api_json(out, s, l);
        out += '\n';
        return ++n < limit && out.size() < max_bytes;
      });
  return n;
}

uint64_t last_log_record_seq(const lmdb_env& env) {
  return env.read([](txn& t) { return log_high_water(t); });
}

std::optional<log_trim> plan_log_trim(const lmdb_env& env, int64_t now_ns, int64_t max_age_ns,
                                      uint64_t max_bytes, uint64_t max_lines) {
  std::optional<log_trim> out;
  env.read([&](txn& t) {
    auto size = t.size("logs");
    uint64_t excess = 0; // lines to remove for the size cap
    if (size.bytes > max_bytes && size.entries > 0) {
      auto target = static_cast<double>(max_bytes) * 0.9;
      auto share = (static_cast<double>(size.bytes) - target) / static_cast<double>(size.bytes);
      excess = static_cast<uint64_t>(std::ceil(share * static_cast<double>(size.entries)));
    }
    uint64_t shipped = UINT64_MAX;
    if (auto c = t.get("meta", loki_cursor_key))
      shipped = std::strtoull(c->c_str(), nullptr, 10);
    auto cutoff = now_ns - max_age_ns;
    log_trim trim;
    trim.table_bytes = size.bytes;
    std::string stop;
    t.scan("logs", "", [&](std::string_view k, std::string_view v) {
      stored_line line;
      auto seq = seq_from_key(k);
      bool old = !decode_stored(seq, v, line) || line.ts_ns < cutoff;
      if (!old && trim.lines >= excess) {
        stop = std::string{k};
        return false;
      }
      if (trim.lines >= max_lines) {
        trim.more = true;
        stop = std::string{k};
        return false;
      }
      if (trim.lines == 0)
        trim.first_seq = seq;
      trim.last_seq = seq;
      ++trim.lines;
      if (seq > shipped)
        ++trim.unshipped;
      return true;
    });
    if (trim.lines == 0)
      return;
    // Never an open end: lines committed after this plan are not its to remove.
    if (stop.empty())
      stop = seq_key(trim.last_seq + 1);
    trim.op = write_op{write_op::erase_range, "logs", seq_key(trim.first_seq), stop};
    out = std::move(trim);
  });
  return out;
}

void append_api_json(std::string& out, const stored_line& s, const log_labels& l) {
  out += "{\"seq\":";
  out += std::to_string(s.seq);
  out += ",\"ts\":";
  append_json_string(out, rfc3339(s.ts_ns));
  out += ",\"ts_ns\":\"";
  out += std::to_string(s.ts_ns);
  out += "\",\"line\":";
  append_json_string(out, s.line);
  out += s.stream == 2 ? ",\"stream\":\"stderr\",\"level\":" : ",\"stream\":\"stdout\",\"level\":";
  append_json_string(out, s.level);
  out += ",\"labels\":{\"service\":";
  append_json_string(out, l.service);
  out += ",\"instance\":";
  append_json_string(out, l.instance);
  out += ",\"namespace\":";
  append_json_string(out, l.ns);
  out += ",\"level\":";
  append_json_string(out, s.level);
  out += ",\"source\":";
  append_json_string(out, l.source);
  out += ",\"node\":";
  append_json_string(out, l.node);
  out += '}';
  if (auto rid = request_id_of(s, l); !rid.empty()) {
    out += ",\"request_id\":";
    append_json_string(out, rid);
  }
  out += '}';
}

std::string to_api_json(const log_record& r) {
  stored_line s;
  s.seq = r.seq;
  s.ts_ns = r.ts_ns;
  s.stream = r.stream;
  s.level = r.level;
  s.line = r.line;
  log_labels l{r.service, r.instance, r.source, r.request_id, r.ns, r.node};
  std::string out;
  out.reserve(256 + r.line.size());
  append_api_json(out, s, l);
  return out;
}

// -- schema 1 → 2 -------------------------------------------------------------------------

uint64_t migrate_logs_v1(txn& t) {
  using nlohmann::json;
  // 1. `logs`: each JSON record becomes a binary one under the same seq, in
  //    place; the pipeline's copies of job lines are remembered per job.
  struct copy {
    uint64_t seq;
    int64_t ts;
    uint64_t line_hash;
  };
  std::map<std::string, std::vector<copy>, std::less<>> job_copies;
  {
    MDB_cursor* raw = nullptr;
    check(mdb_cursor_open(t.raw(), t.dbi("logs"), &raw), "mdb_cursor_open");
    std::unique_ptr<MDB_cursor, void (*)(MDB_cursor*)> cur{raw, mdb_cursor_close};
    MDB_val k, v;
    for (int rc = mdb_cursor_get(raw, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(raw, &k, &v, MDB_NEXT)) {
      std::string_view key{static_cast<const char*>(k.mv_data), k.mv_size};
      auto j = json::parse(std::string_view{static_cast<const char*>(v.mv_data), v.mv_size},
                           nullptr, false);
      if (j.is_discarded() || !j.is_object())
        continue;
      log_labels l{j.value("service", ""),    j.value("instance", ""),  j.value("source", ""),
                   j.value("request_id", ""), j.value("namespace", ""), j.value("node", "")};
      auto ts = j.value("ts", int64_t{0});
      auto line = j.value("line", "");
      auto level = j.value("level", "").substr(0, 255);
      auto id = intern_labels(t, encode_labels(l));
      std::string rec(record_header, '\0');
      put_le(rec.data(), static_cast<uint64_t>(ts), 8);
      rec[8] = static_cast<char>(j.value("stream", uint8_t{1}));
      put_le(rec.data() + 9, id, 8);
      rec[17] = static_cast<char>(level.size());
      rec += level;
      rec += line;
      auto seq = seq_from_key(key);
      // The key must not point into the page that the put rewrites.
      auto key_copy = seq_key(seq);
      MDB_val kc = to_val(key_copy);
      MDB_val nv = to_val(rec);
      check(mdb_cursor_put(raw, &kc, &nv, MDB_CURRENT), "mdb_cursor_put(migrate logs)");
      if (l.source == "job")
        job_copies[l.instance].push_back(copy{seq, ts, hash64(line)});
    }
  }
  // 2. `job_logs`: each job's lines point at their copy in `logs` when the
  //    pipeline stored one (same order, time and text), else at a record
  //    appended now; consecutive ones become one index entry.
  std::vector<std::pair<std::string, std::string>> index;
  uint64_t appended = 0;
  std::string job;
  std::optional<job_record> rec;
  const std::vector<copy>* copies = nullptr;
  size_t next_copy = 0;
  uint64_t s0 = 0, g0 = 0, count = 0;
  auto flush = [&] {
    if (count == 0)
      return;
    std::string entry;
    append_le(entry, g0, 8);
    append_le(entry, count, 4);
    index.emplace_back(log_key(job, s0), std::move(entry));
    count = 0;
  };
  t.scan("job_logs", {}, [&](std::string_view k, std::string_view v) {
    if (k.size() < 9 || k[k.size() - 9] != '/' || v.size() < 9)
      return true;
    auto id = k.substr(0, k.size() - 9);
    auto seq = seq_from_key(k.substr(k.size() - 8));
    auto ts = static_cast<int64_t>(seq_from_key(v.substr(0, 8)));
    auto stream = static_cast<uint8_t>(v[8]);
    auto line = v.substr(9);
    if (id != job) {
      flush();
      job.assign(id);
      auto raw = t.get("jobs", job);
      rec.reset();
      if (raw) {
        try {
          rec = decode_job(*raw);
        } catch (const std::exception&) {
        }
      }
      auto c = job_copies.find(job);
      copies = c == job_copies.end() ? nullptr : &c->second;
      next_copy = 0;
    }
    uint64_t g = 0;
    if (copies && next_copy < copies->size() && (*copies)[next_copy].ts == ts &&
        (*copies)[next_copy].line_hash == hash64(line)) {
      g = (*copies)[next_copy++].seq;
    } else {
      log_labels l;
      l.service = rec && !rec->name.empty() ? rec->name : "job";
      l.instance = job;
      l.source = "job";
      l.request_id = rec ? rec->request_id : "";
      l.ns = "default";
      l.node = rec ? rec->node : "";
      log_op_builder b{l};
      b.add(ts, stream, detect_level(line, stream == 2, "info", "error"), line);
      g = append_log_op(t, {}, b.take()).first;
      ++appended;
    }
    if (count > 0 && seq == s0 + count && g == g0 + count) {
      ++count;
    } else {
      flush();
      s0 = seq;
      g0 = g;
      count = 1;
    }
    return true;
  });
  flush();
  check(mdb_drop(t.raw(), t.dbi("job_logs"), 0), "mdb_drop(job_logs)");
  for (auto& [k, v] : index)
    t.put("job_logs", k, v);
  return appended;
}

} // namespace troupe::persistence
