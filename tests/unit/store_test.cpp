#define CAF_SUITE store
#include "support/dsl.hpp"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "actors/store.hpp"
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
  auto result = request<write_result>(st, write_atom::value,
                                      write_batch{put("meta", "k", "v"), append("events", "e1"),
                                                  append("events", "e2")});
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
  auto good1 = self->request(st, caf::infinite, write_atom::value, write_batch{put("meta", "a", "1")});
  auto bad = self->request(st, caf::infinite, write_atom::value,
                           write_batch{put("meta", "b", "2"), put("no_such_table", "x", "y")});
  auto good2 = self->request(st, caf::infinite, write_atom::value, write_batch{put("meta", "c", "3")});
  run();
  good1.receive([](write_result&) {}, [](caf::error& err) { CAF_FAIL(to_string(err)); });
  bad.receive([](write_result&) { CAF_FAIL("a batch naming an unknown table was accepted"); },
              [](caf::error& err) { CAF_CHECK_EQUAL(err.code(), static_cast<uint8_t>(ec::invalid_argument)); });
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
  request<write_result>(st, write_atom::value, write_batch{put("meta", "kept", "yes"),
                                                          append("events", "one")});
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
      return nlohmann::json{{"ts", ts},          {"line", line},         {"stream", 1},
                            {"level", level},    {"service", "svc"},     {"instance", instance},
                            {"source", source},  {"request_id", "rid-7"}, {"namespace", "prod"},
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

CAF_TEST(json strings escape control characters and replace invalid utf8) {
  std::string out;
  persistence::append_json_string(out, std::string{"a\"b\\c\n\x01\xc3\xa9\xff\xe2\x82"});
  CAF_CHECK_EQUAL(out, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
  auto parsed = nlohmann::json::parse(out);
  CAF_CHECK_EQUAL(parsed.get<std::string>(), "a\"b\\c\n\x01\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

CAF_TEST_FIXTURE_SCOPE_END()
