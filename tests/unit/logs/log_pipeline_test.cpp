#define CAF_SUITE log_pipeline
#include "support/dsl.hpp"

#include <condition_variable>
#include <mutex>

#include <nlohmann/json.hpp>

#include "actors/core/log_render.hpp"
#include "actors/core/names.hpp"
#include "actors/core/status.hpp"
#include "actors/core/store.hpp"
#include "actors/logs/log_batcher.hpp"
#include "actors/logs/log_router.hpp"
#include "actors/logs/log_stream.hpp"
#include "actors/metrics/metrics_model.hpp"
#include "persistence/jobs.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/logging.hpp"
#include "support/capture_server.hpp"
#include "support/paced_stream.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

/// One line as a subscriber got it: its seq (global, or the index's), level
/// and the JSON of the shape it subscribed to.
struct seen_line {
  uint64_t seq = 0;
  std::string level;
  json data;
};

struct recorder_state {
  static inline const char* name = "log_recorder";
  std::vector<seen_line> seen;
  /// The messages as received (to see that one is shared, not copied).
  std::vector<caf::message> messages;
};

log_subscriber_actor::behavior_type
recorder(log_subscriber_actor::stateful_pointer<recorder_state> self) {
  return {[self](const log_committed& b) {
    auto& st = self->state;
    st.messages.push_back(self->current_mailbox_element()->copy_content_to_message());
    bool index = !b.index_json.empty();
    for (size_t i = 0; i < b.size(); ++i)
      st.seen.push_back({(index ? b.first_index_seq : b.first_seq) + i, b.levels[i],
                         json::parse(index ? b.index_json[i] : b.log_json[i])});
  }};
}

struct flaky_store_state {
  static inline const char* name = "flaky_store";
  int failures = 0;
};

/// Stands in for the store: fails the first `failures` writes (as a store
/// restarting under its supervisor does), passes the rest to the real one.
store_actor::behavior_type flaky_store(store_actor::stateful_pointer<flaky_store_state> self,
                                       store_actor real, int failures) {
  self->state.failures = failures;
  return {
      [self, real](write_atom, write_batch& b) -> caf::result<write_result> {
        if (self->state.failures > 0) {
          --self->state.failures;
          return caf::make_error(ec::store_failure, "the store restarts");
        }
        return self->delegate(real, write_atom::value, std::move(b));
      },
      [](flush_atom) -> caf::result<ok_atom> { return ok_atom::value; },
      [](shutdown_atom) -> caf::result<ok_atom> { return ok_atom::value; },
      [](commit_atom) {},
      [](status_atom) {
        return component_status{"flaky_store", true, {}};
      },
  };
}

/// A job's batch for the router.
log_ingest job_batch(uint64_t first, const std::vector<std::string>& lines) {
  log_ingest in;
  in.labels = log_labels{"build", "j-1", "job", "", "", ""};
  in.index = "j-1";
  in.first_seq = first;
  in.ts_ns = now_ns();
  in.count = static_cast<uint32_t>(lines.size());
  for (auto& l : lines)
    troupe::pack_line(in.lines, l);
  return in;
}

/// The HTTP side of a follower: records what the follower sends.
class captured_stream final : public http::sse_stream {
public:
  bool send(std::string_view id, std::string_view, std::string_view) override {
    ids.emplace_back(id);
    return true;
  }
  bool comment(std::string_view) override { return true; }
  bool write(std::string_view) override { return true; }
  void close() override { closed_ = true; }
  void abort() override { closed_ = true; }
  bool closed() const override { return closed_; }
  size_t backlog() const override { return 0; }
  size_t capacity() const override { return 1024; }
  size_t backlog_bytes() const override { return 0; }
  size_t capacity_bytes() const override { return 4u << 20; }
  void on_close(std::function<void()>) override {}
  std::vector<std::string> ids;

private:
  bool closed_ = false;
};

struct fixture : test::deterministic_fixture {
  test::temp_dir dir;
  std::shared_ptr<persistence::lmdb_env> env =
      persistence::lmdb_env::open(dir / "store", 64ull << 20);
  store_actor st = sys.spawn(store, env);
  test::capture_server loki_server;
  std::vector<caf::actor> extra;

  fixture() { enroll(sys, names::store, st); }

  ~fixture() override {
    withdraw(sys, names::store);
    withdraw(sys, names::logs);
    withdraw(sys, names::loki);
    for (auto& a : extra)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
    consume_messages();
  }

  /// Appends records straight into the `logs` table (what the router does).
  uint64_t put_lines(std::vector<std::string> lines, const std::string& rid = {}, int64_t ts = 0) {
    persistence::txn t{*env, false};
    std::vector<log_record> records;
    for (auto& l : lines) {
      log_record r;
      r.ts_ns = ts != 0 ? ts : now_ns();
      r.line = l;
      r.level = "info";
      r.service = "svc";
      r.instance = "i-1";
      r.source = "job";
      r.ns = "default";
      r.node = "n1";
      r.request_id = rid;
      records.push_back(std::move(r));
    }
    auto last = persistence::append_log_records(t, records);
    t.commit();
    return last;
  }

  /// Appends lines as the router does and returns them as it fans them out
  /// to GET /logs followers.
  log_committed put_lines_live(const std::vector<std::string>& lines) {
    persistence::txn t{*env, false};
    persistence::log_op_builder b{log_labels{"svc", "i-1", "job", "", "default", "n1"}};
    for (auto& l : lines)
      b.add(now_ns(), 1, "info", l);
    auto op = b.take();
    auto first = persistence::append_log_op(t, {}, op).first;
    t.commit();
    return render_committed(op, first, {}, 0, true, false);
  }

  /// The batcher's lag gauge lands here (the registry samples it).
  std::shared_ptr<metrics::gauge_board> board = std::make_shared<metrics::gauge_board>();

  double lag() {
    for (auto& d : board->read())
      if (d.family == "logs.sink.lag")
        return d.value;
    return -1;
  }

  log_batcher_actor start_batcher(loki_config cfg) {
    cfg.url = loki_server.url();
    auto b = sys.spawn(log_batcher, env, cfg, board);
    extra.push_back(caf::actor_cast<caf::actor>(b));
    consume_messages();
    return b;
  }

  std::optional<std::string> cursor() {
    return env->read([](persistence::txn& t) { return t.get("meta", "loki.cursor"); });
  }

  /// The pushed lines, in push order.
  static std::vector<std::string> lines_of(const test::capture_server::request& req) {
    std::vector<std::string> out;
    auto j = json::parse(req.body);
    for (auto& s : j.at("streams"))
      for (auto& v : s.at("values"))
        out.push_back(v.at(1).get<std::string>());
    return out;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(log_pipeline_tests, fixture)

CAF_TEST(the router labels levels persists and forwards batches) {
  logs_config cfg;
  cfg.ns = "prod";
  auto router = sys.spawn(log_router, cfg, std::string{"node-a"}, false);
  extra.push_back(caf::actor_cast<caf::actor>(router));
  auto rec = sys.spawn(recorder);
  extra.push_back(caf::actor_cast<caf::actor>(rec));
  caf::anon_send(router, subscribe_atom::value, rec);
  consume_messages();
  auto ts = now_ns();
  log_ingest out;
  out.labels = log_labels{"build", "j-1", "job", "abc", "", ""};
  out.index = "j-1";
  out.first_seq = 1;
  out.ts_ns = ts;
  out.count = 2;
  troupe::pack_line(out.lines, "plain stdout");
  troupe::pack_line(out.lines, R"({"severity":"WARNING","msg":"x"})");
  auto err = out;
  err.first_seq = 3;
  err.stream = 2;
  err.count = 1;
  err.lines.clear();
  troupe::pack_line(err.lines, "plain stderr");
  caf::anon_send(router, ingest_atom::value, out);
  caf::anon_send(router, ingest_atom::value, err);
  consume_messages();
  auto& seen = deref<log_subscriber_actor::stateful_base<recorder_state>>(rec).state.seen;
  CAF_REQUIRE_EQUAL(seen.size(), 3u);
  CAF_CHECK_EQUAL(seen[0].seq, 1u);
  CAF_CHECK_EQUAL(seen[2].seq, 3u);
  CAF_CHECK_EQUAL(seen[0].level, "info");
  CAF_CHECK_EQUAL(seen[1].level, "warn");
  CAF_CHECK_EQUAL(seen[2].level, "error");
  CAF_CHECK_EQUAL(seen[2].data.value("line", ""), "plain stderr");
  CAF_CHECK_EQUAL(seen[2].data.value("seq", 0), 3);
  CAF_CHECK_EQUAL(seen[1].data["labels"].value("namespace", ""), "prod");
  uint64_t scanned = 0;
  persistence::log_query q;
  q.request_id = "abc";
  auto stored = persistence::query_logs(*env, q, 0, 10, scanned);
  CAF_REQUIRE_EQUAL(stored.size(), 3u);
  CAF_CHECK_EQUAL(stored[1].ns, "prod");
  CAF_CHECK_EQUAL(stored[1].node, "node-a");
  q.level = "error";
  CAF_CHECK_EQUAL(persistence::query_logs(*env, q, 0, 10, scanned).size(), 1u);
  // The job's own view: its seqs, through the per-instance index.
  auto mine = persistence::read_logs(*env, "j-1", 0, 10);
  CAF_REQUIRE_EQUAL(mine.size(), 3u);
  CAF_CHECK_EQUAL(mine[0].seq, 1u);
  CAF_CHECK_EQUAL(mine[2].seq, 3u);
  CAF_CHECK_EQUAL(mine[2].line, "plain stderr");
  CAF_CHECK_EQUAL(persistence::read_logs(*env, "j-1", 1, 10).size(), 2u);
  auto third = persistence::read_logs(*env, "j-1", 2, 1);
  CAF_CHECK_EQUAL(third.at(0).line, "plain stderr");
  CAF_CHECK_EQUAL(persistence::last_log_seq(*env, "j-1"), 3u);
  // Lines read together share a read time; stored, each is 1 ns after the
  // previous line of its instance (Loki takes equal lines at equal times
  // for duplicates), the stderr batch included.
  CAF_CHECK_EQUAL(mine[0].ts_ns, ts);
  CAF_CHECK_EQUAL(mine[1].ts_ns, ts + 1);
  CAF_CHECK_EQUAL(mine[2].ts_ns, ts + 2);
}

CAF_TEST(the router renders a batch once per shape and shares one message among readers) {
  auto router = sys.spawn(log_router, logs_config{}, std::string{"n"}, false);
  extra.push_back(caf::actor_cast<caf::actor>(router));
  std::vector<log_subscriber_actor> readers;
  for (int i = 0; i < 3; ++i) {
    readers.push_back(sys.spawn(recorder));
    extra.push_back(caf::actor_cast<caf::actor>(readers.back()));
  }
  caf::anon_send(router, subscribe_atom::value, readers[0]);
  caf::anon_send(router, subscribe_atom::value, readers[1]);
  caf::anon_send(router, subscribe_atom::value, std::string{"j-1"}, readers[2]);
  consume_messages();
  caf::anon_send(router, ingest_atom::value, job_batch(1, {"a", "b"}));
  consume_messages();
  auto state = [&](int i) -> recorder_state& {
    return deref<log_subscriber_actor::stateful_base<recorder_state>>(readers[i]).state;
  };
  for (int i = 0; i < 3; ++i)
    CAF_REQUIRE_EQUAL(state(i).messages.size(), 1u);
  // One message, rendered once: the same data reached every reader.
  CAF_CHECK(state(0).messages[0].cvals().get() == state(1).messages[0].cvals().get());
  CAF_CHECK(state(0).messages[0].cvals().get() == state(2).messages[0].cvals().get());
  auto& batch = state(0).messages[0].get_as<log_committed>(0);
  CAF_CHECK_EQUAL(batch.log_json.size(), 2u);
  CAF_CHECK_EQUAL(batch.index_json.size(), 2u);
  // GET /logs's shape and the job stream's, each from its own seqs.
  auto global = json::parse(batch.log_json[1]);
  CAF_CHECK_EQUAL(global.value("line", ""), "b");
  CAF_CHECK_EQUAL(global["labels"].value("instance", ""), "j-1");
  auto mine = json::parse(batch.index_json[1]);
  CAF_CHECK_EQUAL(mine.value("seq", 0), 2);
  CAF_CHECK_EQUAL(mine.value("data", ""), "b\n");
  CAF_CHECK_EQUAL(mine.value("type", ""), "log");
}

CAF_TEST(a job stream gets the job lines in order though a retried batch commits later) {
  auto flaky = sys.spawn(flaky_store, st, 1);
  extra.push_back(caf::actor_cast<caf::actor>(flaky));
  enroll(sys, names::store, flaky);
  auto router = sys.spawn(log_router, logs_config{}, std::string{"n"}, false);
  extra.push_back(caf::actor_cast<caf::actor>(router));
  auto all = sys.spawn(recorder);
  auto job = sys.spawn(recorder);
  extra.push_back(caf::actor_cast<caf::actor>(all));
  extra.push_back(caf::actor_cast<caf::actor>(job));
  caf::anon_send(router, subscribe_atom::value, all);
  caf::anon_send(router, subscribe_atom::value, std::string{"j-1"}, job);
  consume_messages();
  auto ingest = [&](const log_ingest& in) {
    auto h = self->request(router, caf::infinite, ingest_atom::value, in);
    consume_messages();
    uint64_t first = 0;
    h.receive([&](uint64_t x) { first = x; }, [](caf::error& err) { CAF_FAIL(to_string(err)); });
    return first;
  };
  auto a = job_batch(1, {"1", "2", "3"});
  CAF_CHECK_EQUAL(ingest(a), 0u); // not stored: the job retries it
  CAF_CHECK_EQUAL(ingest(job_batch(4, {"4", "5"})), 1u);
  auto lines_of = [&](const log_subscriber_actor& r) {
    std::vector<std::string> out;
    for (auto& l : deref<log_subscriber_actor::stateful_base<recorder_state>>(r).state.seen)
      out.push_back(l.data.value("line", ""));
    return out;
  };
  // GET /logs follows the global order; the job's reader waits for line 1.
  CAF_CHECK_EQUAL(lines_of(all), (std::vector<std::string>{"4", "5"}));
  CAF_CHECK(lines_of(job).empty());
  CAF_CHECK_EQUAL(ingest(a), 3u);
  CAF_CHECK_EQUAL(lines_of(all), (std::vector<std::string>{"4", "5", "1", "2", "3"}));
  CAF_CHECK_EQUAL(lines_of(job), (std::vector<std::string>{"1", "2", "3", "4", "5"}));
  std::vector<uint64_t> seqs;
  for (auto& l : deref<log_subscriber_actor::stateful_base<recorder_state>>(job).state.seen)
    seqs.push_back(l.seq);
  CAF_CHECK_EQUAL(seqs, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  // Sent again (its first try had committed after all): delivered once.
  CAF_CHECK_EQUAL(ingest(job_batch(4, {"4", "5"})), 1u);
  CAF_CHECK_EQUAL(lines_of(job).size(), 5u);
  enroll(sys, names::store, st);
}

CAF_TEST(batches held for a batch that never comes go out after a few) {
  auto flaky = sys.spawn(flaky_store, st, 1);
  extra.push_back(caf::actor_cast<caf::actor>(flaky));
  enroll(sys, names::store, flaky);
  auto router = sys.spawn(log_router, logs_config{}, std::string{"n"}, false);
  extra.push_back(caf::actor_cast<caf::actor>(router));
  auto job = sys.spawn(recorder);
  extra.push_back(caf::actor_cast<caf::actor>(job));
  caf::anon_send(router, subscribe_atom::value, std::string{"j-1"}, job);
  consume_messages();
  // Line 1 is lost (its producer crashed before retrying); 2..6 commit.
  for (uint64_t seq = 1; seq <= 6; ++seq)
    caf::anon_send(router, ingest_atom::value, job_batch(seq, {std::to_string(seq)}));
  consume_messages();
  std::vector<uint64_t> seqs;
  for (auto& l : deref<log_subscriber_actor::stateful_base<recorder_state>>(job).state.seen)
    seqs.push_back(l.seq);
  CAF_CHECK_EQUAL(seqs, (std::vector<uint64_t>{2, 3, 4, 5, 6}));
  enroll(sys, names::store, st);
}

CAF_TEST(the router takes the daemon own captured lines) {
  auto router = sys.spawn(log_router, logs_config{}, std::string{"n"}, false);
  extra.push_back(caf::actor_cast<caf::actor>(router));
  consume_messages();
  logging::start_capture(16, [] {}, {"logs"});
  logging::get("pipeline-test")->warn("hello from troupe");
  logging::get("logs")->warn("never captured");
  caf::anon_send(router, drain_atom::value);
  consume_messages();
  logging::stop_capture();
  uint64_t scanned = 0;
  persistence::log_query q;
  q.service = "troupe";
  auto stored = persistence::query_logs(*env, q, 0, 10, scanned);
  CAF_REQUIRE_EQUAL(stored.size(), 1u);
  CAF_CHECK_EQUAL(stored[0].line, "hello from troupe");
  CAF_CHECK_EQUAL(stored[0].instance, "pipeline-test");
  CAF_CHECK_EQUAL(stored[0].level, "warn");
  CAF_CHECK_EQUAL(stored[0].source, "troupe");
}

CAF_TEST(a follower reads lines the router did not forward from the store) {
  auto router = sys.spawn(log_router, logs_config{}, std::string{"n"}, false);
  extra.push_back(caf::actor_cast<caf::actor>(router));
  enroll(sys, names::logs, router);
  put_lines({"1", "2", "3"});
  auto out = std::make_shared<captured_stream>();
  persistence::log_query q;
  q.instance = "i-1";
  auto follower = sys.spawn(log_stream, out, env, q, std::optional<uint64_t>{1});
  extra.push_back(caf::actor_cast<caf::actor>(follower));
  consume_messages();
  CAF_CHECK_EQUAL(out->ids, (std::vector<std::string>{"2", "3"})); // resumed after 1
  // Lines committed while the router forwarded nothing, then a live batch:
  // the gap is read from the store, in order, nothing twice.
  put_lines({"4", "5"});
  auto live = put_lines_live({"6"});
  caf::anon_send(follower, live);
  consume_messages();
  CAF_CHECK_EQUAL(out->ids, (std::vector<std::string>{"2", "3", "4", "5", "6"}));
  caf::anon_send(follower, live); // a duplicate is dropped
  consume_messages();
  CAF_CHECK_EQUAL(out->ids.size(), 5u);
}

CAF_TEST(a follower replays a backlog in pages bounded by bytes) {
  auto router = sys.spawn(log_router, logs_config{}, std::string{"n"}, false);
  extra.push_back(caf::actor_cast<caf::actor>(router));
  enroll(sys, names::logs, router);
  // 400 lines of 1 KB: far more than the client's 16 KiB queue.
  std::vector<std::string> lines;
  for (int i = 1; i <= 400; ++i)
    lines.push_back(std::to_string(i) + std::string(1000, '.'));
  put_lines(lines);
  auto out = std::make_shared<test::paced_stream>(4096, 16 << 10);
  persistence::log_query q;
  q.instance = "i-1";
  auto follower = sys.spawn(log_stream, out, env, q, std::optional<uint64_t>{0});
  extra.push_back(caf::actor_cast<caf::actor>(follower));
  consume_messages();
  // A page holds about half the byte capacity, not 500 events.
  CAF_CHECK_GREATER(out->backlog(), 0u);
  CAF_CHECK_LESS_OR_EQUAL(out->peak_bytes, (16u << 10) / 2 + out->largest);
  for (int i = 0; i < 10'000 && out->received.size() + out->backlog() < 400; ++i) {
    out->drain();
    advance_time(10ms);
    consume_messages();
  }
  out->drain();
  CAF_CHECK(!out->overflowed);
  CAF_CHECK_LESS_OR_EQUAL(out->peak_bytes, (16u << 10) / 2 + out->largest);
  CAF_REQUIRE_EQUAL(out->received.size(), 400u);
  size_t wrong = 0;
  for (size_t i = 0; i < 400; ++i)
    if (json::parse(out->received[i].data).value("line", "") != lines[i])
      ++wrong;
  CAF_CHECK_EQUAL(wrong, 0u);
}

CAF_TEST(a follower whose client falls behind reads live lines from the store) {
  auto router = sys.spawn(log_router, logs_config{}, std::string{"n"}, false);
  extra.push_back(caf::actor_cast<caf::actor>(router));
  enroll(sys, names::logs, router);
  auto out = std::make_shared<test::paced_stream>(64, 1 << 20);
  persistence::log_query q;
  q.instance = "i-1";
  auto follower = sys.spawn(log_stream, out, env, q, std::optional<uint64_t>{});
  extra.push_back(caf::actor_cast<caf::actor>(follower));
  consume_messages();
  // 50 live batches of 10 lines to a client that does not read: queued as
  // they came, 500 events would overflow its 64-event queue.
  std::vector<std::string> want;
  for (int b = 0; b < 50; ++b) {
    std::vector<std::string> lines;
    for (int i = 0; i < 10; ++i)
      lines.push_back(std::to_string(b * 10 + i));
    auto live = put_lines_live(lines);
    want.insert(want.end(), lines.begin(), lines.end());
    caf::anon_send(follower, live);
    consume_messages();
  }
  CAF_CHECK(!out->overflowed);
  CAF_CHECK_LESS_OR_EQUAL(out->peak_events, 64u / 2 + 10);
  for (int i = 0; i < 10'000 && out->received.size() + out->backlog() < want.size(); ++i) {
    out->drain();
    advance_time(10ms);
    consume_messages();
  }
  out->drain();
  CAF_CHECK(!out->overflowed);
  std::vector<std::string> got;
  for (auto& e : out->received)
    got.push_back(json::parse(e.data).value("line", ""));
  CAF_CHECK_EQUAL(got, want);
}

CAF_TEST(a stdout that does not keep up never blocks the router) {
  // stdout is a pipe nobody reads: the writer blocks until released.
  std::mutex mtx;
  std::condition_variable cv;
  bool released = false;
  std::vector<std::string> written;
  auto writer = std::make_shared<stdout_writer>(4096, [&](const std::string& text) {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait(guard, [&] { return released; });
    written.push_back(text);
  });
  logs_config cfg;
  cfg.stdout_sink = true;
  auto router = sys.spawn(log_router_with, cfg, std::string{"n"}, false, writer);
  extra.push_back(caf::actor_cast<caf::actor>(router));
  consume_messages();
  // 100 batches of 10 lines of 100 bytes (100 KB): every one is stored and
  // answered although stdout takes nothing.
  size_t answered = 0;
  for (uint64_t b = 0; b < 100; ++b) {
    log_ingest in;
    in.labels = log_labels{"build", "j-1", "job", "", "", ""};
    in.index = "j-1";
    in.first_seq = 1 + b * 10;
    in.ts_ns = now_ns();
    in.count = 10;
    for (int i = 0; i < 10; ++i)
      troupe::pack_line(in.lines, std::string(100, 'x'));
    auto h = self->request(router, caf::infinite, ingest_atom::value, in);
    consume_messages();
    h.receive([&](uint64_t) { ++answered; }, [](caf::error& err) { CAF_FAIL(to_string(err)); });
  }
  CAF_CHECK_EQUAL(answered, 100u);
  CAF_CHECK_EQUAL(persistence::last_log_seq(*env, "j-1"), 1000u);
  auto dropped = writer->dropped_lines();
  CAF_CHECK_GREATER(dropped, 0u);
  {
    std::lock_guard<std::mutex> guard{mtx};
    released = true;
  }
  cv.notify_all();
  CAF_REQUIRE(writer->wait_idle(std::chrono::seconds(30)));
  size_t printed = 0;
  for (auto& text : written)
    printed += static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
  // What was not dropped was printed; at most the queue's worth was held.
  CAF_CHECK_EQUAL(printed + dropped, 1000u);
  CAF_CHECK_LESS_OR_EQUAL(printed, 4096u / 100 + 10);
}

CAF_TEST(a batch is pushed when it reaches batch_entries) {
  loki_config cfg;
  cfg.batch_entries = 3;
  cfg.batch_wait = 1h;
  auto b = start_batcher(cfg);
  put_lines({"a", "b"});
  caf::anon_send(b, nudge_atom::value, uint64_t{2});
  consume_messages();
  CAF_CHECK_EQUAL(loki_server.count(), 0u);
  auto last = put_lines({"c", "d"}, "rid-1");
  caf::anon_send(b, nudge_atom::value, last);
  consume_messages();
  CAF_REQUIRE_EQUAL(loki_server.count(), 1u);
  auto req = loki_server.requests()[0];
  CAF_CHECK_EQUAL(req.method, "POST");
  CAF_CHECK_EQUAL(req.target, "/loki/api/v1/push");
  CAF_CHECK_EQUAL(req.headers["content-type"], "application/json");
  CAF_CHECK_EQUAL(lines_of(req), (std::vector<std::string>{"a", "b", "c"}));
  auto body = json::parse(req.body);
  auto& stream = body["streams"][0];
  CAF_CHECK_EQUAL(stream["stream"]["service"], "svc");
  CAF_CHECK_EQUAL(stream["stream"]["instance"], "i-1");
  CAF_CHECK(stream["values"][0][0].is_string());
  CAF_CHECK_EQUAL(cursor(), std::optional<std::string>{"3"});
}

CAF_TEST(a partial batch is pushed once batch_wait passed) {
  loki_config cfg;
  cfg.batch_entries = 100;
  cfg.batch_wait = 1s;
  auto b = start_batcher(cfg);
  put_lines({"only"});
  caf::anon_send(b, nudge_atom::value, uint64_t{1});
  consume_messages();
  CAF_CHECK_EQUAL(loki_server.count(), 0u);
  advance_time(1s);
  consume_messages();
  CAF_REQUIRE_EQUAL(loki_server.count(), 1u);
  CAF_CHECK_EQUAL(lines_of(loki_server.requests()[0]), std::vector<std::string>{"only"});
}

CAF_TEST(outages are retried with backoff and every line arrives once in order) {
  loki_config cfg;
  cfg.batch_entries = 2;
  cfg.backoff_initial = 100ms;
  cfg.backoff_max = 100ms;
  cfg.breaker_failures = 100;
  auto b = start_batcher(cfg);
  loki_server.script({500, {}, "boom"}, 2);
  auto last = put_lines({"1", "2", "3", "4"});
  caf::anon_send(b, nudge_atom::value, last);
  consume_messages();
  CAF_CHECK_EQUAL(loki_server.count(), 1u);
  CAF_CHECK_EQUAL(lag(), 4.0); // nothing shipped yet
  advance_time(100ms);
  consume_messages();
  CAF_CHECK_EQUAL(loki_server.count(), 2u);
  advance_time(100ms);
  consume_messages();
  auto reqs = loki_server.requests();
  CAF_REQUIRE_EQUAL(reqs.size(), 4u);
  // The same batch twice while failing, then both batches once.
  CAF_CHECK_EQUAL(lines_of(reqs[0]), lines_of(reqs[2]));
  CAF_CHECK_EQUAL(lines_of(reqs[2]), (std::vector<std::string>{"1", "2"}));
  CAF_CHECK_EQUAL(lines_of(reqs[3]), (std::vector<std::string>{"3", "4"}));
  CAF_CHECK_EQUAL(cursor(), std::optional<std::string>{"4"});
  CAF_CHECK_EQUAL(lag(), 0.0);
}

CAF_TEST(a 429 waits at least Retry - After) {
  loki_config cfg;
  cfg.batch_entries = 1;
  cfg.backoff_initial = 10ms;
  cfg.backoff_max = 10ms;
  auto b = start_batcher(cfg);
  loki_server.script({429, {{"Retry-After", "2"}}, ""});
  put_lines({"x"});
  caf::anon_send(b, nudge_atom::value, uint64_t{1});
  consume_messages();
  CAF_CHECK_EQUAL(loki_server.count(), 1u);
  advance_time(1s);
  consume_messages();
  CAF_CHECK_EQUAL(loki_server.count(), 1u);
  advance_time(1s);
  consume_messages();
  CAF_CHECK_EQUAL(loki_server.count(), 2u);
  CAF_CHECK_EQUAL(cursor(), std::optional<std::string>{"1"});
}

CAF_TEST(a batch rejected with 400 is skipped not retried) {
  loki_config cfg;
  cfg.batch_entries = 1;
  auto b = start_batcher(cfg);
  loki_server.script({400, {}, "entry out of order"});
  auto last = put_lines({"bad", "good"});
  caf::anon_send(b, nudge_atom::value, last);
  consume_messages();
  auto reqs = loki_server.requests();
  CAF_REQUIRE_EQUAL(reqs.size(), 2u);
  CAF_CHECK_EQUAL(lines_of(reqs[1]), std::vector<std::string>{"good"});
  CAF_CHECK_EQUAL(cursor(), std::optional<std::string>{"2"});
}

CAF_TEST(the breaker opens after repeated failures and probes after its cooldown) {
  loki_config cfg;
  cfg.batch_entries = 1;
  cfg.backoff_initial = 10ms;
  cfg.backoff_max = 10ms;
  cfg.breaker_failures = 2;
  cfg.breaker_cooldown = 5s;
  auto b = start_batcher(cfg);
  loki_server.script({503, {}, ""}, 2);
  put_lines({"x"});
  caf::anon_send(b, nudge_atom::value, uint64_t{1});
  consume_messages();
  advance_time(10ms);
  consume_messages();
  CAF_CHECK_EQUAL(loki_server.count(), 2u);
  // Open: the backoff passing alone sends nothing.
  advance_time(10ms);
  consume_messages();
  CAF_CHECK_EQUAL(loki_server.count(), 2u);
  advance_time(5s);
  consume_messages();
  CAF_CHECK_EQUAL(loki_server.count(), 3u);
  CAF_CHECK_EQUAL(cursor(), std::optional<std::string>{"1"});
}

CAF_TEST(a full outbox drops the oldest entries and counts them) {
  loki_config cfg;
  cfg.batch_entries = 1;
  cfg.outbox_bytes = 200; // about 7 of the 20 binary records
  cfg.backoff_initial = 10ms;
  cfg.backoff_max = 10ms;
  auto b = start_batcher(cfg);
  loki_server.set_default({500, {}, ""});
  std::vector<std::string> lines;
  for (int i = 0; i < 20; ++i)
    lines.push_back("line-" + std::to_string(i));
  auto last = put_lines(lines);
  caf::anon_send(b, nudge_atom::value, last);
  consume_messages();
  auto status = json::parse([&] {
    auto h = self->request(b, caf::infinite, status_atom::value);
    consume_messages();
    std::string s;
    h.receive([&](component_status& x) { s = status_json(x).dump(); }, [](caf::error&) {});
    return s;
  }());
  CAF_CHECK(status["dropped"].get<uint64_t>() > 0);
  CAF_CHECK(status["cursor"].get<uint64_t>() == status["dropped"].get<uint64_t>());
  loki_server.set_default({204, {}, ""});
  advance_time(10ms);
  consume_messages();
  // What is left arrives, newest included.
  auto reqs = loki_server.requests();
  CAF_CHECK_EQUAL(lines_of(reqs.back()), std::vector<std::string>{"line-19"});
}

CAF_TEST_FIXTURE_SCOPE_END()
