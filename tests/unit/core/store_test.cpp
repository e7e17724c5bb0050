#define CAF_SUITE store
#include "support/dsl.hpp"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "actors/core/store.hpp"
#include "persistence/jobs.hpp"
#include "persistence/logs.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;
using troupe::persistence::lmdb_env;

namespace {

struct fixture : test::deterministic_fixture {
  test::temp_dir dir;
  std::shared_ptr<lmdb_env> env = lmdb_env::open(dir / "store", 64ull << 20);
  store_actor st = sys.spawn(store, env);

  ~fixture() override {
    if (st)
      caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
    run();
  }

  std::optional<std::string> get(const std::string& table, const std::string& key) {
    return env->read([&](persistence::txn& t) { return t.get(table, key); });
  }
};

write_op put(std::string table, std::string key, std::string value) {
  return write_op{write_op::put, std::move(table), std::move(key), std::move(value)};
}

write_op append(std::string table, std::string value) {
  return write_op{write_op::append, std::move(table), {}, std::move(value)};
}

} // namespace

CAF_TEST_FIXTURE_SCOPE(store_tests, fixture)

CAF_TEST(a write is readable after its acknowledgement) {
  auto result = request<write_result>(
      st, write_atom::value,
      write_batch{put("meta", "k", "v"), append("events", "e1"), append("events", "e2")});
  CAF_CHECK_EQUAL(result.appended, (std::vector<uint64_t>{1, 2}));
  CAF_CHECK_EQUAL(get("meta", "k"), std::optional<std::string>{"v"});
  CAF_CHECK_EQUAL(get("events", persistence::seq_key(2)), std::optional<std::string>{"e2"});
  request<write_result>(st, write_atom::value,
                        write_batch{write_op{write_op::erase, "meta", "k", {}}});
  CAF_CHECK(!get("meta", "k"));
}

CAF_TEST(writes queued together commit in one transaction) {
  auto h1 = self->request(st, caf::infinite, write_atom::value, write_batch{append("events", "a")});
  auto h2 = self->request(st, caf::infinite, write_atom::value, write_batch{append("events", "b")});
  auto h3 = self->request(st, caf::infinite, write_atom::value, write_batch{append("events", "c")});
  // Nothing is committed before the store runs, and nothing acknowledged.
  CAF_CHECK(!get("events", persistence::seq_key(1)));
  run();
  auto& state = deref<store_actor::stateful_base<store_state>>(st).state;
  CAF_CHECK_EQUAL(state.commits, 1u);
  CAF_CHECK_EQUAL(state.batches, 3u);
  std::vector<uint64_t> seqs;
  for (auto* h : {&h1, &h2, &h3})
    h->receive([&](write_result& r) { seqs.push_back(r.appended.at(0)); },
               [](caf::error& err) { CAF_FAIL("write failed: " << to_string(err)); });
  CAF_CHECK_EQUAL(seqs, (std::vector<uint64_t>{1, 2, 3}));
  CAF_CHECK_EQUAL(get("events", persistence::seq_key(3)), std::optional<std::string>{"c"});
}

CAF_TEST(a bad batch fails alone and its neighbours still commit) {
  auto good1 =
      self->request(st, caf::infinite, write_atom::value, write_batch{put("meta", "a", "1")});
  auto bad = self->request(st, caf::infinite, write_atom::value,
                           write_batch{put("meta", "b", "2"), put("no_such_table", "x", "y")});
  auto good2 =
      self->request(st, caf::infinite, write_atom::value, write_batch{put("meta", "c", "3")});
  run();
  good1.receive([](write_result&) {}, [](caf::error& err) { CAF_FAIL(to_string(err)); });
  bad.receive([](write_result&) { CAF_FAIL("a batch naming an unknown table was accepted"); },
              [](caf::error& err) {
                CAF_CHECK_EQUAL(err.code(), static_cast<uint8_t>(ec::invalid_argument));
              });
  good2.receive([](write_result&) {}, [](caf::error& err) { CAF_FAIL(to_string(err)); });
  CAF_CHECK_EQUAL(get("meta", "a"), std::optional<std::string>{"1"});
  CAF_CHECK(!get("meta", "b"));
  CAF_CHECK_EQUAL(get("meta", "c"), std::optional<std::string>{"3"});
}

CAF_TEST(flush answers after every earlier write is committed) {
  auto w = self->request(st, caf::infinite, write_atom::value, write_batch{put("meta", "f", "1")});
  auto f = self->request(st, caf::infinite, flush_atom::value);
  run();
  bool flushed = false;
  f.receive([&](ok_atom) { flushed = true; }, [](caf::error& err) { CAF_FAIL(to_string(err)); });
  CAF_CHECK(flushed);
  CAF_CHECK_EQUAL(get("meta", "f"), std::optional<std::string>{"1"});
  w.receive([](write_result&) {}, [](caf::error& err) { CAF_FAIL(to_string(err)); });
}

CAF_TEST(data survives closing and reopening the environment) {
  request<write_result>(st, write_atom::value,
                        write_batch{put("meta", "kept", "yes"), append("events", "one")});
  caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
  run();
  st = nullptr;
  env.reset();
  env = lmdb_env::open(dir / "store", 64ull << 20);
  CAF_CHECK_EQUAL(get("meta", "kept"), std::optional<std::string>{"yes"});
  CAF_CHECK_EQUAL(get("meta", "schema_version"),
                  std::optional<std::string>{std::to_string(persistence::schema_version)});
  st = sys.spawn(store, env);
  auto r = request<write_result>(st, write_atom::value, write_batch{append("events", "two")});
  CAF_CHECK_EQUAL(r.appended, std::vector<uint64_t>{2});
}

CAF_TEST(a data dir of a newer schema is refused and left untouched) {
  {
    persistence::txn t{*env, false};
    t.put("meta", "schema_version", "99");
    t.commit();
  }
  caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
  run();
  st = nullptr;
  env.reset();
  std::string message;
  try {
    lmdb_env::open(dir / "store", 64ull << 20);
  } catch (const std::exception& e) {
    message = e.what();
  }
  CAF_CHECK(message.find("schema version 99") != std::string::npos);
  CAF_CHECK(message.find("refusing") != std::string::npos);
  // Still 99: the refusal wrote nothing. Look with the raw LMDB API.
  MDB_env* raw = nullptr;
  CAF_REQUIRE_EQUAL(mdb_env_create(&raw), 0);
  mdb_env_set_maxdbs(raw, 8);
  CAF_REQUIRE_EQUAL(mdb_env_open(raw, (dir / "store").c_str(), MDB_RDONLY, 0644), 0);
  MDB_txn* txn = nullptr;
  CAF_REQUIRE_EQUAL(mdb_txn_begin(raw, nullptr, MDB_RDONLY, &txn), 0);
  MDB_dbi dbi;
  CAF_REQUIRE_EQUAL(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
  MDB_val key{14, const_cast<char*>("schema_version")};
  MDB_val val;
  CAF_REQUIRE_EQUAL(mdb_get(txn, dbi, &key, &val), 0);
  CAF_CHECK_EQUAL(std::string(static_cast<char*>(val.mv_data), val.mv_size), "99");
  mdb_txn_abort(txn);
  mdb_env_close(raw);
}

CAF_TEST(a schema 1 data dir is migrated to schema 2 without losing a line) {
  // Write a data dir the way schema 1 did, with the raw LMDB API: JSON
  // records in `logs`, every job line again inline in `job_logs`.
  test::temp_dir old;
  auto path = old / "store";
  std::filesystem::create_directories(path);
  auto job_id = persistence::new_job_id();
  {
    MDB_env* raw = nullptr;
    CAF_REQUIRE_EQUAL(mdb_env_create(&raw), 0);
    mdb_env_set_maxdbs(raw, 8);
    CAF_REQUIRE_EQUAL(mdb_env_open(raw, path.c_str(), 0, 0644), 0);
    MDB_txn* txn = nullptr;
    CAF_REQUIRE_EQUAL(mdb_txn_begin(raw, nullptr, 0, &txn), 0);
    auto put = [&](const char* table, const std::string& k, const std::string& v) {
      MDB_dbi dbi;
      CAF_REQUIRE_EQUAL(mdb_dbi_open(txn, table, MDB_CREATE, &dbi), 0);
      MDB_val key{k.size(), const_cast<char*>(k.data())};
      MDB_val val{v.size(), const_cast<char*>(v.data())};
      CAF_REQUIRE_EQUAL(mdb_put(txn, dbi, &key, &val, 0), 0);
    };
    put("meta", "schema_version", "1");
    put("meta", "loki.cursor", "2");
    persistence::job_record rec;
    rec.id = job_id;
    rec.name = "build";
    rec.status = "succeeded";
    rec.request_id = "rid-7";
    rec.node = "n1";
    put("jobs", job_id, persistence::encode(rec));
    auto v1_job_line = [](int64_t ts, uint8_t stream, const std::string& line) {
      return persistence::seq_key(static_cast<uint64_t>(ts)) + static_cast<char>(stream) + line;
    };
    put("job_logs", job_id + '/' + persistence::seq_key(1), v1_job_line(100, 1, "one"));
    put("job_logs", job_id + '/' + persistence::seq_key(2), v1_job_line(100, 1, "two"));
    put("job_logs", job_id + '/' + persistence::seq_key(3), v1_job_line(200, 2, "three"));
    auto v1_record = [&](int64_t ts, const std::string& line, const std::string& source,
                         const std::string& instance, const std::string& level) {
      return nlohmann::json{{"ts", ts},         {"line", line},          {"stream", 1},
                            {"level", level},   {"service", "svc"},      {"instance", instance},
                            {"source", source}, {"request_id", "rid-7"}, {"namespace", "prod"},
                            {"node", "n1"}}
          .dump();
    };
    // The pipeline stored "one" and "two" (with a daemon line between them)
    // but never got "three".
    put("logs", persistence::seq_key(1), v1_record(100, "one", "job", job_id, "info"));
    put("logs", persistence::seq_key(2), v1_record(150, "hello", "troupe", "http", "warn"));
    put("logs", persistence::seq_key(3), v1_record(100, "two", "job", job_id, "info"));
    CAF_REQUIRE_EQUAL(mdb_txn_commit(txn), 0);
    mdb_env_close(raw);
  }
  auto migrated = lmdb_env::open(path, 64ull << 20);
  auto meta = [&](const std::string& key) {
    return migrated->read([&](persistence::txn& t) { return t.get("meta", key); });
  };
  CAF_CHECK_EQUAL(meta("schema_version"), std::optional<std::string>{"2"});
  // The Loki cursor still points at the same lines: global seqs are kept.
  CAF_CHECK_EQUAL(meta("loki.cursor"), std::optional<std::string>{"2"});
  auto lines = persistence::read_logs(*migrated, job_id, 0, 10);
  CAF_REQUIRE_EQUAL(lines.size(), 3u);
  CAF_CHECK_EQUAL(lines[0].seq, 1u);
  CAF_CHECK_EQUAL(lines[0].line, "one");
  CAF_CHECK_EQUAL(lines[1].line, "two");
  CAF_CHECK_EQUAL(lines[2].seq, 3u);
  CAF_CHECK_EQUAL(lines[2].line, "three");
  CAF_CHECK_EQUAL(lines[2].stream, 2u);
  CAF_CHECK_EQUAL(lines[2].ts_ns, 200);
  CAF_CHECK_EQUAL(persistence::last_log_seq(*migrated, job_id), 3u);
  CAF_CHECK_EQUAL(persistence::read_logs(*migrated, job_id, 2, 10).size(), 1u);
  uint64_t scanned = 0;
  auto all = persistence::query_logs(*migrated, {}, 0, 10, scanned);
  // One copy of every line: the lost one was added once, at the end.
  CAF_REQUIRE_EQUAL(all.size(), 4u);
  CAF_CHECK_EQUAL(all[1].line, "hello");
  CAF_CHECK_EQUAL(all[1].source, "troupe");
  CAF_CHECK_EQUAL(all[1].level, "warn");
  CAF_CHECK_EQUAL(all[1].ns, "prod");
  CAF_CHECK_EQUAL(all[2].line, "two");
  CAF_CHECK_EQUAL(all[2].request_id, "rid-7");
  CAF_CHECK_EQUAL(all[3].seq, 4u);
  CAF_CHECK_EQUAL(all[3].line, "three");
  CAF_CHECK_EQUAL(all[3].service, "build");
  CAF_CHECK_EQUAL(all[3].instance, job_id);
  CAF_CHECK_EQUAL(all[3].level, "error");
  migrated.reset();
  // Opening again changes nothing.
  auto again = lmdb_env::open(path, 64ull << 20);
  CAF_CHECK_EQUAL(persistence::read_logs(*again, job_id, 0, 10).size(), 3u);
  CAF_CHECK_EQUAL(persistence::query_logs(*again, {}, 0, 10, scanned).size(), 4u);
}

CAF_TEST(erase_range removes exactly the keys in the range across many pages) {
  write_batch fill;
  for (int i = 0; i < 5000; ++i)
    fill.push_back(append("events", std::string(100, 'x')));
  request<write_result>(st, write_atom::value, fill);
  request<write_result>(
      st, write_atom::value,
      write_batch{write_op{write_op::erase_range, "events", persistence::seq_key(10),
                           persistence::seq_key(4001)}});
  auto left = env->read([](persistence::txn& t) { return t.size("events"); });
  CAF_CHECK_EQUAL(left.entries, 5000u - 3991u);
  CAF_CHECK(get("events", persistence::seq_key(9)).has_value());
  CAF_CHECK(!get("events", persistence::seq_key(10)).has_value());
  CAF_CHECK(!get("events", persistence::seq_key(4000)).has_value());
  CAF_CHECK(get("events", persistence::seq_key(4001)).has_value());
  // An empty upper bound runs to the end.
  request<write_result>(
      st, write_atom::value,
      write_batch{write_op{write_op::erase_range, "events", persistence::seq_key(4500), {}}});
  CAF_CHECK_EQUAL(env->read([](persistence::txn& t) { return t.last_seq("events"); }), 4499u);
}

namespace {

/// Appends `n` lines of job `id` as batches of `per_batch`, stamped `ts`.
void job_lines(lmdb_env& env, const std::string& id, uint64_t first_seq, int n, int per_batch,
               int64_t ts) {
  persistence::txn t{env, false};
  for (int done = 0; done < n; done += per_batch) {
    persistence::log_op_builder b{log_labels{"svc", id, "job", "", "default", "n"}};
    for (int i = done; i < std::min(n, done + per_batch); ++i)
      b.add(ts, 1, "info", "line " + std::to_string(first_seq + static_cast<uint64_t>(i)));
    persistence::append_log_op(t, persistence::log_key(id, first_seq + static_cast<uint64_t>(done)),
                               b.take());
  }
  t.commit();
}

} // namespace

CAF_TEST(log retention trims the oldest lines by age and size and job reads skip the gap) {
  using namespace std::chrono;
  auto now = duration_cast<nanoseconds>(hours(1000)).count();
  auto hour = duration_cast<nanoseconds>(hours(1)).count();
  job_lines(*env, "old", 1, 300, 100, now - 48 * hour); // 3 index batches, 2 days old
  job_lines(*env, "new", 1, 200, 100, now - hour);
  // Only age: 1 day retention removes the 300 old lines, in bounded batches.
  auto plan = persistence::plan_log_trim(*env, now, 24 * hour, 1ull << 30, 250);
  CAF_REQUIRE(plan.has_value());
  CAF_CHECK_EQUAL(plan->lines, 250u);
  CAF_CHECK(plan->more);
  CAF_CHECK_EQUAL(plan->unshipped, 0u); // no Loki sink: nothing is unshipped
  request<write_result>(st, write_atom::value, write_batch{plan->op});
  // A job read starting in the gap pages on by what it covered.
  uint64_t covered = 0;
  auto page = persistence::read_logs(*env, "old", 0, 100, &covered);
  CAF_CHECK(page.empty());
  CAF_CHECK_EQUAL(covered, 100u);
  page = persistence::read_logs(*env, "old", 200, 100, &covered);
  CAF_REQUIRE_EQUAL(page.size(), 50u);
  CAF_CHECK_EQUAL(page.front().seq, 251u);
  CAF_CHECK_EQUAL(page.front().line, "line 251");
  CAF_CHECK_EQUAL(covered, 300u);
  CAF_CHECK_EQUAL(persistence::read_logs(*env, "old", 300, 100, &covered).size(), 0u);
  CAF_CHECK_EQUAL(covered, 300u); // the end
  plan = persistence::plan_log_trim(*env, now, 24 * hour, 1ull << 30, 250);
  CAF_REQUIRE(plan.has_value());
  CAF_CHECK_EQUAL(plan->lines, 50u);
  CAF_CHECK(!plan->more);
  request<write_result>(st, write_atom::value, write_batch{plan->op});
  CAF_CHECK(!persistence::plan_log_trim(*env, now, 24 * hour, 1ull << 30, 250).has_value());
  // Size: a cap below the table's size removes the oldest lines until the
  // table is under 90 % of it; lines Loki has not shipped are counted.
  request<write_result>(st, write_atom::value, write_batch{put("meta", "loki.cursor", "350")});
  auto bytes = env->read([](persistence::txn& t) { return t.size("logs").bytes; });
  plan = persistence::plan_log_trim(*env, now, 24 * hour, bytes / 2, 1000);
  CAF_REQUIRE(plan.has_value());
  CAF_CHECK_GREATER_OR_EQUAL(plan->lines, 100u);
  CAF_CHECK_LESS(plan->lines, 200u);
  CAF_CHECK_EQUAL(plan->first_seq, 301u);
  CAF_CHECK_EQUAL(plan->unshipped, plan->last_seq - 350);
  CAF_CHECK_EQUAL(persistence::read_logs(*env, "new", 0, 1000).size(), 200u);
}

CAF_TEST(a trim leaves lines written after it was planned and seqs are never reused) {
  using namespace std::chrono;
  auto now = duration_cast<nanoseconds>(hours(1000)).count();
  auto hour = duration_cast<nanoseconds>(hours(1)).count();
  job_lines(*env, "a", 1, 50, 50, now - 48 * hour);
  auto plan = persistence::plan_log_trim(*env, now, 24 * hour, 1ull << 30, 1000);
  CAF_REQUIRE(plan.has_value());
  CAF_CHECK_EQUAL(plan->lines, 50u);
  job_lines(*env, "b", 1, 3, 3, now); // committed between plan and commit
  request<write_result>(st, write_atom::value, write_batch{plan->op});
  CAF_CHECK_EQUAL(persistence::read_logs(*env, "b", 0, 10).size(), 3u);
  // Every line gone: the next ones still get fresh seqs, so a job index or a
  // sink cursor never points at another job's line.
  request<write_result>(
      st, write_atom::value,
      write_batch{write_op{write_op::erase_range, "logs", persistence::seq_key(1), {}}});
  CAF_CHECK_EQUAL(persistence::last_log_record_seq(*env), 53u);
  job_lines(*env, "c", 1, 2, 2, now);
  CAF_CHECK_EQUAL(persistence::last_log_record_seq(*env), 55u);
  CAF_CHECK(persistence::read_logs(*env, "a", 0, 100).empty());
  auto c = persistence::read_logs(*env, "c", 0, 10);
  CAF_REQUIRE_EQUAL(c.size(), 2u);
  CAF_CHECK_EQUAL(c.front().line, "line 1");
}

CAF_TEST(job reads cover holes in the index and any Last - Event - ID) {
  job_lines(*env, "h", 1, 100, 100, 1);
  job_lines(*env, "h", 301, 100, 100, 1); // 101..300 never arrived
  uint64_t covered = 0;
  auto page = persistence::read_logs(*env, "h", 0, 150, &covered);
  CAF_CHECK_EQUAL(page.size(), 100u);
  CAF_CHECK_EQUAL(covered, 150u); // the index goes on: the hole does not end it
  page = persistence::read_logs(*env, "h", 150, 150, &covered);
  CAF_CHECK(page.empty());
  CAF_CHECK_EQUAL(covered, 300u);
  page = persistence::read_logs(*env, "h", 300, 150, &covered);
  CAF_CHECK_EQUAL(page.size(), 100u);
  CAF_CHECK_EQUAL(covered, 400u);
  CAF_CHECK(persistence::read_logs(*env, "h", 400, 150, &covered).empty());
  CAF_CHECK_EQUAL(covered, 400u); // the end
  // Seqs near the top of the range neither wrap around nor loop.
  for (auto huge : {UINT64_MAX, UINT64_MAX - 1, UINT64_MAX - 100}) {
    CAF_CHECK(persistence::read_logs(*env, "h", huge, 512, &covered).empty());
    CAF_CHECK_GREATER_OR_EQUAL(covered, huge);
  }
  uint64_t scanned = 0;
  CAF_CHECK(persistence::query_logs(*env, {}, UINT64_MAX, 10, scanned).empty());
}

CAF_TEST(log paging reaches the end also when the newest lines were removed) {
  job_lines(*env, "p", 1, 10, 10, 1);
  request<write_result>(
      st, write_atom::value,
      write_batch{write_op{write_op::erase_range, "logs", persistence::seq_key(6), {}}});
  uint64_t scanned = 0;
  std::string out;
  persistence::query_logs_ndjson(*env, {}, 0, 100, scanned, out);
  CAF_CHECK_EQUAL(scanned, 10u); // not 5: the next page starts past the removed lines
  persistence::query_logs_ndjson(*env, {}, 0, 3, scanned, out);
  CAF_CHECK_EQUAL(scanned, 3u); // a full page stops where it stopped
}

CAF_TEST(a job batch sent again is stored once) {
  persistence::log_op_builder b{log_labels{"svc", "j", "job", "", "default", "n"}};
  b.add(1, 1, "info", "once");
  auto op = b.take();
  persistence::txn t{*env, false};
  auto first = persistence::append_log_op(t, persistence::log_key("j", 1), op);
  auto again = persistence::append_log_op(t, persistence::log_key("j", 1), op);
  t.commit();
  CAF_CHECK_EQUAL(again.first, first.first);
  CAF_CHECK_EQUAL(again.second, 1u);
  CAF_CHECK_EQUAL(env->read([](persistence::txn& t) { return t.size("logs").entries; }), 1u);
  CAF_CHECK_EQUAL(persistence::read_logs(*env, "j", 0, 10).size(), 1u);
}

CAF_TEST(purging a job log removes its lines and index in bounded batches) {
  job_lines(*env, "a", 1, 500, 100, 1);
  job_lines(*env, "b", 1, 100, 100, 1);
  auto purge = persistence::purge_job_log_ops(*env, "a", 250);
  CAF_CHECK_EQUAL(purge.lines, 200u);
  CAF_CHECK(!purge.complete);
  request<write_result>(st, write_atom::value, purge.ops);
  uint64_t covered = 0;
  auto rest = persistence::read_logs(*env, "a", 0, 1000, &covered);
  CAF_REQUIRE_EQUAL(rest.size(), 300u);
  CAF_CHECK_EQUAL(rest.front().seq, 201u);
  purge = persistence::purge_job_log_ops(*env, "a", 250);
  CAF_CHECK_EQUAL(purge.lines, 200u);
  request<write_result>(st, write_atom::value, purge.ops);
  purge = persistence::purge_job_log_ops(*env, "a", 250);
  CAF_CHECK_EQUAL(purge.lines, 100u);
  CAF_CHECK(purge.complete);
  request<write_result>(st, write_atom::value, purge.ops);
  CAF_CHECK(persistence::purge_job_log_ops(*env, "a", 250).ops.empty());
  CAF_CHECK(persistence::read_logs(*env, "a", 0, 1000).empty());
  // Its label set went with its last lines; b's stays.
  CAF_CHECK_EQUAL(env->read([](persistence::txn& t) { return t.size("log_labels").entries; }), 1u);
  // The other job's lines and index are untouched.
  CAF_CHECK_EQUAL(persistence::read_logs(*env, "b", 0, 1000).size(), 100u);
  CAF_CHECK_EQUAL(env->read([](persistence::txn& t) { return t.size("logs").entries; }), 100u);
}

CAF_TEST(request ids are kept per line so label sets stay one per instance) {
  persistence::txn t{*env, false};
  for (auto rid : {"r-1", "r-2", ""}) {
    persistence::log_op_builder b{log_labels{"troupe", "http", "troupe", rid, "default", "n"}};
    b.add(1, 1, "info", std::string{"served "} + rid);
    persistence::append_log_op(t, {}, b.take());
  }
  // A line stored before request ids moved out of label sets: the id is in
  // its set, and the stream byte has no flag.
  log_labels old{"troupe", "http", "troupe", "r-old", "default", "n"};
  auto old_id = uint64_t{0xabcdef};
  t.put("log_labels", persistence::seq_key(old_id), persistence::encode_labels(old));
  std::string v(8, '\0');
  v += '\x01';
  for (int i = 0; i < 8; ++i)
    v += static_cast<char>((old_id >> (8 * i)) & 0xff);
  v += '\x04';
  v += "infoold line";
  t.put("logs", persistence::seq_key(4), v);
  t.commit();
  CAF_CHECK_EQUAL(env->read([](persistence::txn& t) { return t.size("log_labels").entries; }), 2u);
  uint64_t scanned = 0;
  persistence::log_query q;
  q.request_id = "r-2";
  auto found = persistence::query_logs(*env, q, 0, 10, scanned);
  CAF_REQUIRE_EQUAL(found.size(), 1u);
  CAF_CHECK_EQUAL(found[0].line, "served r-2");
  CAF_CHECK_EQUAL(found[0].request_id, "r-2");
  q.request_id = "r-old";
  found = persistence::query_logs(*env, q, 0, 10, scanned);
  CAF_REQUIRE_EQUAL(found.size(), 1u);
  CAF_CHECK_EQUAL(found[0].line, "old line");
  q.request_id.clear();
  CAF_CHECK_EQUAL(persistence::query_logs(*env, q, 0, 10, scanned).size(), 4u);
  std::string nd;
  q.request_id = "r-1";
  persistence::query_logs_ndjson(*env, q, 0, 10, scanned, nd);
  CAF_CHECK(nd.find(R"("request_id":"r-1")") != std::string::npos);
}

CAF_TEST(json strings escape control characters and replace invalid utf8) {
  std::string out;
  troupe::append_json_string(out, std::string{"a\"b\\c\n\x01\xc3\xa9\xff\xe2\x82"});
  CAF_CHECK_EQUAL(out, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
  auto parsed = nlohmann::json::parse(out);
  CAF_CHECK_EQUAL(parsed.get<std::string>(),
                  "a\"b\\c\n\x01\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

CAF_TEST(a job record keeps its submitter and older records read as none) {
  persistence::job_record rec;
  rec.id = "0190-a";
  rec.submitted_by = "ci-bot";
  rec.spec = R"({"command":["true"],"env":{}})";
  auto back = persistence::decode_job(persistence::encode(rec));
  CAF_CHECK_EQUAL(back.submitted_by, "ci-bot");
  // A record stored before the field existed.
  auto old = persistence::decode_job(R"({"id":"0190-b","status":"succeeded","spec":"{}"})");
  CAF_CHECK_EQUAL(old.submitted_by, "");
}

CAF_TEST_FIXTURE_SCOPE_END()
