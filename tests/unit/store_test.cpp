#define CAF_SUITE store
#include "support/dsl.hpp"

#include "actors/store.hpp"
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

CAF_TEST_FIXTURE_SCOPE_END()
