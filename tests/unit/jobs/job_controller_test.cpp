#define CAF_SUITE job_controller
#include "support/dsl.hpp"

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <thread>

#include "actors/core/event_bus.hpp"
#include "actors/core/log_render.hpp"
#include "actors/core/names.hpp"
#include "actors/core/status.hpp"
#include "actors/core/store.hpp"
#include "actors/jobs/job_controller.hpp"
#include "actors/jobs/job_stream.hpp"
#include "actors/metrics/metrics_model.hpp"
#include "persistence/jobs.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/clock.hpp"
#include "support/paced_stream.hpp"
#include "support/temp_dir.hpp"

using namespace troupe;
using namespace std::chrono_literals;
namespace js = persistence::job_status;
using persistence::job_record;

namespace {

/// A scripted stand-in for the job actor: it records that it started and
/// ends when the test tells it how (exit code, cancel, crash).
struct fake_job_state {
  static inline const char* name = "fake_job";
};

void put_record(persistence::lmdb_env& env, const job_record& r) {
  persistence::txn t{env, false};
  t.put("jobs", r.id, persistence::encode(r));
  t.commit();
}

/// Many records in one transaction (one fsync).
void put_records(persistence::lmdb_env& env, const std::vector<job_record>& rs) {
  persistence::txn t{env, false};
  for (auto& r : rs)
    t.put("jobs", r.id, persistence::encode(r));
  t.commit();
}

job_actor::behavior_type fake_job(job_actor::stateful_pointer<fake_job_state> self, std::string id,
                                  job_controller_actor ctl,
                                  std::shared_ptr<persistence::lmdb_env> env,
                                  std::shared_ptr<std::vector<std::string>> launched) {
  launched->push_back(id);
  self->send(ctl, started_atom::value, id);
  auto end = [self, id, ctl, env](std::string status, bool requeue = false) {
    auto rec = *persistence::get_job(*env, id);
    rec.status = status;
    if (requeue) {
      rec.attempt += 1;
      rec.not_before = now_ns() + 5'000'000'000;
    }
    put_record(*env, rec);
    self->send(ctl, done_atom::value, id, status, requeue, std::vector<job_subscriber_actor>{});
    self->quit();
  };
  return {
      [](process::output&) {},
      [end](exited_atom, int32_t code, int32_t retry) {
        if (retry != 0)
          end(js::queued, true);
        else
          end(code == 0 ? js::succeeded : js::failed);
      },
      [end](cancel_atom) -> ok_atom {
        end(js::cancelled);
        return ok_atom::value;
      },
      [](timeout_atom) {},
      [](kill_atom) {},
      [](deferred_atom, uint64_t) {},
      [](subscribe_atom, job_subscriber_actor&) -> uint64_t { return 0; },
      [end](shutdown_atom) -> ok_atom {
        end(js::lost);
        return ok_atom::value;
      },
  };
}

/// Stands in for the store and records every batch written through it.
struct store_probe_state {
  static inline const char* name = "store_probe";
  std::vector<write_batch> batches;
};

store_actor::behavior_type store_probe(store_actor::stateful_pointer<store_probe_state> self,
                                       store_actor real) {
  return {
      [self, real](write_atom, write_batch& b) -> caf::result<write_result> {
        self->state.batches.push_back(b);
        return self->delegate(real, write_atom::value, std::move(b));
      },
      [self, real](flush_atom) -> caf::result<ok_atom> {
        return self->delegate(real, flush_atom::value);
      },
      [self, real](shutdown_atom) -> caf::result<ok_atom> {
        return self->delegate(real, shutdown_atom::value);
      },
      [](commit_atom) {},
      [](status_atom) {
        return component_status{"store_probe", true, {}};
      },
  };
}

/// Spawns `sleep 60` in a process group of its own with TROUPE_JOB_ID=`id`.
pid_t spawn_orphan(const std::string& id) {
  std::string env_var = "TROUPE_JOB_ID=" + id;
  char* argv[] = {const_cast<char*>("sleep"), const_cast<char*>("60"), nullptr};
  char* envp[] = {env_var.data(), nullptr};
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  auto rc = posix_spawnp(&pid, "sleep", nullptr, &attr, argv, envp);
  posix_spawnattr_destroy(&attr);
  if (rc != 0)
    return -1;
  // posix_spawn returns once the child's exec has begun, not ended: until the
  // kernel has set up the new image, /proc/<pid>/environ reads empty. Wait for
  // the variable to be visible, as it is for every process a scan is meant to find.
  auto path = "/proc/" + std::to_string(pid) + "/environ";
  for (int i = 0; i < 100000; ++i) {
    std::ifstream in{path, std::ios::binary};
    std::string env{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
    if (env.find(env_var) != std::string::npos)
      return pid;
    std::this_thread::yield();
  }
  return -1;
}

struct fixture : test::deterministic_fixture {
  test::temp_dir dir;
  std::shared_ptr<persistence::lmdb_env> env =
      persistence::lmdb_env::open(dir / "store", 64ull << 20);
  store_actor st = sys.spawn(store, env);
  std::shared_ptr<std::vector<std::string>> launched = std::make_shared<std::vector<std::string>>();
  std::map<std::string, job_actor> actors;
  job_controller_actor ctl;

  fixture() { enroll(sys, names::store, st); }

  ~fixture() override {
    if (ctl)
      caf::anon_send_exit(ctl, caf::exit_reason::user_shutdown);
    for (auto& [id, a] : actors)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(st, caf::exit_reason::user_shutdown);
    withdraw(sys, names::store);
    run_until([] { return false; });
  }

  /// Where the controller keeps its gauges (the registry would sample it).
  std::shared_ptr<metrics::gauge_board> board = std::make_shared<metrics::gauge_board>();

  double gauge(const std::string& family) {
    for (auto& d : board->read())
      if (d.family == family)
        return d.value;
    return -1;
  }

  void start(int slots) {
    auto ctx = std::make_shared<job_env>();
    ctx->env = env;
    ctx->gauges = board;
    ctx->cfg.concurrency = slots;
    ctx->cfg.sweep_interval = 24h;
    ctx->node_name = "test-node";
    ctx->detach_janitor = false;
    auto e = env;
    auto l = launched;
    auto* am = &actors;
    ctx->launch = [e, l, am](caf::actor_system& s, const std::string& id, job_controller_actor c,
                             std::vector<job_subscriber_actor>) {
      auto a = s.spawn(fake_job, id, c, e, l);
      (*am)[id] = a;
      return a;
    };
    ctl = sys.spawn(job_controller, std::shared_ptr<const job_env>{ctx});
    consume_messages();
  }

  std::string submit(const std::string& name, int priority, int retries = 0) {
    job_record r;
    r.id = persistence::new_job_id();
    r.name = name;
    r.priority = priority;
    r.retries = retries;
    r.spec = "{}";
    auto h = self->request(ctl, caf::infinite, submit_atom::value, persistence::encode(r));
    consume_messages();
    std::string id;
    h.receive([&](std::string& x) { id = x; },
              [](caf::error& err) { CAF_FAIL("submit failed: " << to_string(err)); });
    CAF_REQUIRE_EQUAL(id, r.id);
    names[id] = name;
    return id;
  }

  /// Ends the running job `name` with `code`.
  void finish(const std::string& name, int code = 0, bool retry = false) {
    auto id = id_of(name);
    CAF_REQUIRE(actors.count(id) > 0);
    caf::anon_send(actors[id], exited_atom::value, int32_t{code}, int32_t{retry ? 1 : 0});
    consume_messages();
  }

  std::vector<std::string> launched_names() {
    std::vector<std::string> out;
    for (auto& id : *launched)
      out.push_back(names[id]);
    return out;
  }

  std::string id_of(const std::string& name) {
    for (auto& [id, n] : names)
      if (n == name)
        return id;
    CAF_FAIL("no job named " << name);
    return {};
  }

  std::string status_of(const std::string& name) {
    return persistence::get_job(*env, id_of(name))->status;
  }

  job_controller_state& state() {
    return deref<job_controller_actor::stateful_base<job_controller_state>>(ctl).state;
  }

  std::map<std::string, std::string> names;

  /// Stores lines first..first+count-1 of job `id` (as the log router does
  /// for the job actor) and returns them as the router fans them out to the
  /// job's streams.
  log_committed add_lines(const std::string& id, uint64_t first, uint64_t count,
                          size_t width = 100) {
    persistence::txn t{*env, false};
    persistence::log_op_builder b{log_labels{"svc", id, "job", "", "default", "n"}};
    for (uint64_t i = 0; i < count; ++i) {
      auto text = std::to_string(first + i);
      text.resize(std::max(width, text.size()), '.');
      b.add(now_ns(), 1, "info", text);
    }
    auto op = b.take();
    auto global = persistence::append_log_op(t, persistence::log_key(id, first), op).first;
    t.commit();
    return render_committed(op, global, id, first, false, true);
  }

  job_update status_update(const std::string& id, std::string status, int attempt) {
    job_update up;
    up.job_id = id;
    up.status = std::move(status);
    up.attempt = attempt;
    up.after_seq = persistence::last_log_seq(*env, id); // as the job sends it
    return up;
  }

  /// Marks the job ended in the store and returns its final update.
  job_update complete_update(const std::string& id) {
    auto rec = *persistence::get_job(*env, id);
    rec.status = js::succeeded;
    rec.success = true;
    rec.exit_code = 0;
    put_record(*env, rec);
    job_update up;
    up.job_id = id;
    up.status = js::succeeded;
    up.complete = true;
    up.success = true;
    up.exit_code = 0;
    up.after_seq = persistence::last_log_seq(*env, id);
    return up;
  }

  /// Plays a client that finally reads: drains its queue, lets the stream's
  /// pacing timer fire, until the stream ended (bounded).
  void read_to_the_end(test::paced_stream& s) {
    for (int i = 0; i < 100'000 && !(s.closed() && s.backlog() == 0); ++i) {
      s.drain();
      advance_time(10ms);
      consume_messages();
    }
    s.drain();
  }

  /// The lines (by id) and other events a client read, in order.
  static std::vector<std::string> events_read(const test::paced_stream& s) {
    std::vector<std::string> out;
    for (auto& e : s.received)
      out.push_back(e.event == "log" ? e.id : e.event);
    return out;
  }
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(job_controller_tests, fixture)

CAF_TEST(jobs are stored as queued before the submit is answered) {
  start(1);
  auto id = submit("a", 50);
  auto rec = persistence::get_job(*env, id);
  CAF_REQUIRE(rec.has_value());
  CAF_CHECK_EQUAL(rec->node, "test-node");
  CAF_CHECK(rec->queued_at > 0);
}

CAF_TEST(higher priority runs first and equal priorities run in submission order) {
  start(1);
  submit("first", 50);
  submit("low", 10);
  submit("high-1", 90);
  submit("high-2", 90);
  submit("mid", 50);
  CAF_CHECK_EQUAL(launched_names(), std::vector<std::string>{"first"});
  for (auto n : {"first", "high-1", "high-2", "mid", "low"})
    finish(n);
  CAF_CHECK_EQUAL(launched_names(),
                  (std::vector<std::string>{"first", "high-1", "high-2", "mid", "low"}));
  CAF_CHECK_EQUAL(state().counts[js::succeeded], 5u);
  CAF_CHECK_EQUAL(state().counts[js::queued], 0u);
}

CAF_TEST(slots bound how many jobs run and a freed slot starts the next at once) {
  start(2);
  for (auto n : {"a", "b", "c", "d", "e"})
    submit(n, 50);
  CAF_CHECK_EQUAL(launched_names(), (std::vector<std::string>{"a", "b"}));
  CAF_CHECK_EQUAL(state().running.size(), 2u);
  CAF_CHECK_EQUAL(state().queue.size(), 3u);
  finish("b", 1);
  CAF_CHECK_EQUAL(launched_names(), (std::vector<std::string>{"a", "b", "c"}));
  CAF_CHECK_EQUAL(state().running.size(), 2u);
  CAF_CHECK_EQUAL(state().counts[js::failed], 1u);
  CAF_CHECK_EQUAL(status_of("b"), js::failed);
  // (request<T>() would run() the periodic sweep timer forever.)
  auto h = self->request(ctl, caf::infinite, status_atom::value);
  consume_messages();
  std::string stats;
  h.receive([&](component_status& x) { stats = status_json(x).dump(); },
            [](caf::error& err) { CAF_FAIL(to_string(err)); });
  CAF_CHECK(stats.find(R"("queue_depth":2)") != std::string::npos);
  CAF_CHECK(stats.find(R"("running":2)") != std::string::npos);
  // The same on the gauge board the metrics registry samples every tick.
  CAF_CHECK_EQUAL(gauge("jobs.queue.depth"), 2.0);
  CAF_CHECK_EQUAL(gauge("jobs.queue.pressure"), 1.0);
  CAF_CHECK_EQUAL(gauge("jobs.pool.utilization"), 1.0);
}

CAF_TEST(cancelling a queued job removes it from the queue) {
  start(1);
  submit("running", 50);
  submit("waiting", 50);
  auto h = self->request(ctl, caf::infinite, cancel_atom::value, id_of("waiting"));
  consume_messages();
  h.receive([](std::string& s) { CAF_CHECK_EQUAL(s, js::cancelled); },
            [](caf::error& err) { CAF_FAIL(to_string(err)); });
  CAF_CHECK_EQUAL(status_of("waiting"), js::cancelled);
  finish("running");
  CAF_CHECK_EQUAL(launched_names(), std::vector<std::string>{"running"});
  CAF_CHECK_EQUAL(state().counts[js::cancelled], 1u);
}

CAF_TEST(cancelling a running job answers once it ended) {
  start(1);
  submit("victim", 50);
  submit("next", 50);
  auto h = self->request(ctl, caf::infinite, cancel_atom::value, id_of("victim"));
  consume_messages();
  h.receive([](std::string& s) { CAF_CHECK_EQUAL(s, js::cancelled); },
            [](caf::error& err) { CAF_FAIL(to_string(err)); });
  CAF_CHECK_EQUAL(status_of("victim"), js::cancelled);
  CAF_CHECK_EQUAL(launched_names(), (std::vector<std::string>{"victim", "next"}));
}

CAF_TEST(cancelling an unknown job is not_found) {
  start(1);
  auto h = self->request(ctl, caf::infinite, cancel_atom::value, std::string{"nope"});
  consume_messages();
  h.receive(
      [](std::string&) { CAF_FAIL("cancelled a job that does not exist"); },
      [](caf::error& err) { CAF_CHECK_EQUAL(err.code(), static_cast<uint8_t>(ec::not_found)); });
}

CAF_TEST(a retried job waits for its backoff before it is queued again) {
  start(1);
  submit("flaky", 50, 2);
  submit("other", 10);
  finish("flaky", 1, true);
  // The backoff holds "flaky" back; the slot goes to "other".
  CAF_CHECK_EQUAL(launched_names(), (std::vector<std::string>{"flaky", "other"}));
  CAF_CHECK_EQUAL(state().backing_off.count(id_of("flaky")), 1u);
  finish("other");
  CAF_CHECK_EQUAL(launched_names().size(), 2u);
  advance_time(5s);
  consume_messages();
  CAF_CHECK_EQUAL(launched_names(), (std::vector<std::string>{"flaky", "other", "flaky"}));
}

CAF_TEST(retry backoff doubles per attempt up to the cap) {
  jobs_config cfg;
  cfg.retry_backoff_initial = 1s;
  cfg.retry_backoff_max = 5s;
  CAF_CHECK_EQUAL(retry_backoff(cfg, 1), 1s);
  CAF_CHECK_EQUAL(retry_backoff(cfg, 2), 2s);
  CAF_CHECK_EQUAL(retry_backoff(cfg, 3), 4s);
  CAF_CHECK_EQUAL(retry_backoff(cfg, 4), 5s);
  CAF_CHECK_EQUAL(retry_backoff(cfg, 30), 5s);
}

CAF_TEST(a crashed job actor fails its job and frees the slot) {
  start(1);
  submit("doomed", 50);
  submit("after", 50);
  caf::anon_send_exit(actors[id_of("doomed")], caf::exit_reason::kill);
  consume_messages();
  auto rec = persistence::get_job(*env, id_of("doomed"));
  CAF_CHECK_EQUAL(rec->status, js::failed);
  CAF_CHECK(rec->reason.find("job actor crashed") != std::string::npos);
  CAF_CHECK_EQUAL(launched_names(), (std::vector<std::string>{"doomed", "after"}));
}

CAF_TEST(recovery requeues or loses running jobs and kills their orphans) {
  // What a killed daemon left behind: an orphaned process of a running job.
  auto orphan_id = persistence::new_job_id();
  auto pid = spawn_orphan(orphan_id);
  CAF_REQUIRE(pid > 0);
  auto make = [](std::string id, std::string status, int attempt, int retries, int prio) {
    job_record r;
    r.id = std::move(id);
    r.status = std::move(status);
    r.attempt = attempt;
    r.retries = retries;
    r.priority = prio;
    r.spec = "{}";
    return r;
  };
  auto lost = make(orphan_id, js::running, 1, 0, 50);
  lost.pgid = pid;
  put_record(*env, lost);
  auto again_id = persistence::new_job_id();
  put_record(*env, make(again_id, js::running, 1, 1, 50));
  auto queued_id = persistence::new_job_id();
  put_record(*env, make(queued_id, js::queued, 1, 0, 90));
  auto done_id = persistence::new_job_id();
  put_record(*env, make(done_id, js::succeeded, 1, 0, 50));
  start(4);
  // The orphan was killed: it can be reaped at once.
  int status = 0;
  CAF_CHECK_EQUAL(waitpid(pid, &status, 0), pid);
  CAF_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  auto l = persistence::get_job(*env, orphan_id);
  CAF_CHECK_EQUAL(l->status, js::lost);
  CAF_CHECK(l->reason.find("no retries left") != std::string::npos);
  auto a = persistence::get_job(*env, again_id);
  CAF_CHECK_EQUAL(a->attempt, 2);
  auto done = persistence::get_job(*env, done_id);
  CAF_REQUIRE(done.has_value());
  CAF_CHECK_EQUAL(done->status, js::succeeded);
  // Queued jobs run again, by priority: the queued one first.
  CAF_REQUIRE_EQUAL(launched->size(), 2u);
  CAF_CHECK_EQUAL(launched->at(0), queued_id);
  CAF_CHECK_EQUAL(launched->at(1), again_id);
  CAF_CHECK_EQUAL(state().counts[js::lost], 1u);
}

CAF_TEST(shutdown stops running jobs and answers when they are recorded) {
  start(2);
  submit("a", 50);
  submit("b", 50);
  submit("c", 50);
  auto h = self->request(ctl, caf::infinite, shutdown_atom::value);
  consume_messages();
  bool ok = false;
  h.receive([&](ok_atom) { ok = true; }, [](caf::error& err) { CAF_FAIL(to_string(err)); });
  CAF_CHECK(ok);
  CAF_CHECK_EQUAL(status_of("a"), js::lost);
  CAF_CHECK_EQUAL(status_of("c"), js::queued);
  CAF_CHECK_EQUAL(launched_names().size(), 2u);
}

CAF_TEST(the sweep removes expired workspaces and purges expired jobs) {
  auto make_ended = [&](std::chrono::hours ago, const std::string& ws) {
    job_record r;
    r.id = persistence::new_job_id();
    r.status = js::succeeded;
    r.spec = "{}";
    r.ended_at = now_ns() - std::chrono::nanoseconds(ago).count();
    r.workspace = ws;
    std::filesystem::create_directories(ws + "/sub");
    put_record(*env, r);
    persistence::txn t{*env, false};
    persistence::log_op_builder line{log_labels{"svc", r.id, "job", "", "default", "n"}};
    line.add(r.ended_at, 1, "info", "line");
    persistence::append_log_op(t, persistence::log_key(r.id, 1), line.take());
    t.commit();
    return r.id;
  };
  // Events: two from 8 days ago, one fresh; and the newest stays anyway.
  {
    persistence::txn t{*env, false};
    for (auto age : {24 * 8, 24 * 8, 0}) {
      auto ev = make_event("test.event");
      ev.ts_ns = now_ns() - std::chrono::nanoseconds(std::chrono::hours(age)).count();
      t.append("events", persistence::encode_stored(ev));
    }
    t.commit();
  }
  auto old_id = make_ended(std::chrono::hours(24 * 8), dir / "ws-old");
  auto mid_id = make_ended(std::chrono::hours(2), dir / "ws-mid");
  auto new_id = make_ended(std::chrono::hours(0), dir / "ws-new");
  start(1); // retention 7d and workspace retention 1h are the defaults
  caf::anon_send(ctl, sweep_atom::value);
  consume_messages();
  CAF_CHECK(!persistence::get_job(*env, old_id).has_value());
  CAF_CHECK(persistence::read_logs(*env, old_id, 0, 10).empty());
  // The purged job's lines left the log table too, not only its index.
  auto entries = [&](const char* table) {
    return env->read([&](persistence::txn& t) { return t.size(table).entries; });
  };
  CAF_CHECK_EQUAL(entries("logs"), 2u);
  CAF_CHECK_EQUAL(entries("job_logs"), 2u);
  // Events past jobs.retention went; seqs go on after the newest.
  CAF_CHECK_EQUAL(entries("events"), 1u);
  auto kept = persistence::read_events(*env, 0, 10);
  CAF_REQUIRE_EQUAL(kept.size(), 1u);
  CAF_CHECK_EQUAL(kept[0].seq, 3u);
  auto mid = persistence::get_job(*env, mid_id);
  CAF_REQUIRE(mid.has_value());
  CAF_CHECK_EQUAL(mid->workspace, "");
  CAF_CHECK_EQUAL(persistence::read_logs(*env, mid_id, 0, 10).size(), 1u);
  auto fresh = persistence::get_job(*env, new_id);
  CAF_REQUIRE(fresh.has_value());
  CAF_CHECK_EQUAL(fresh->workspace, dir / "ws-new");
  // The janitor deleted the trees (scheduled here, detached in a node).
  CAF_CHECK(!std::filesystem::exists(dir / "ws-old"));
  CAF_CHECK(!std::filesystem::exists(dir / "ws-mid"));
  CAF_CHECK(std::filesystem::exists(dir / "ws-new"));
}

CAF_TEST(the sweep works in bounded steps of one transaction each) {
  // Many expired jobs, some with a workspace past workspace_retention, one
  // with a log longer than a step may purge.
  std::vector<job_record> records;
  auto ended = [&](std::chrono::hours ago, const std::string& ws = {}) {
    job_record r;
    r.id = persistence::new_job_id();
    r.status = js::succeeded;
    r.spec = "{}";
    r.ended_at = now_ns() - std::chrono::nanoseconds(ago).count();
    r.workspace = ws;
    if (!ws.empty())
      std::filesystem::create_directories(ws);
    records.push_back(r);
    return r.id;
  };
  std::vector<std::string> expired;
  std::vector<std::string> workspaces;
  auto long_log = ended(std::chrono::hours(24 * 8));
  // Written in batches, as a job writes: a purge step ends between them.
  for (uint64_t first = 1; first <= sweep_lines_per_step + 50'000; first += 10'000)
    add_lines(long_log, first, 10'000, 8);
  for (int i = 0; i < 2100; ++i) {
    expired.push_back(ended(std::chrono::hours(24 * 8)));
    if (i % 10 == 0) {
      auto ws = dir / ("ws-" + std::to_string(i));
      ended(std::chrono::hours(2), ws);
      workspaces.push_back(ws);
    }
  }
  put_records(*env, records);
  auto probe = sys.spawn(store_probe, st);
  enroll(sys, names::store, probe);
  start(1);
  auto& batches = deref<store_actor::stateful_base<store_probe_state>>(probe).state.batches;
  batches.clear();
  caf::anon_send(ctl, sweep_atom::value);
  consume_messages();
  // Everything due is done ...
  for (auto& id : expired)
    CAF_CHECK(!persistence::get_job(*env, id).has_value());
  CAF_CHECK(!persistence::get_job(*env, long_log).has_value());
  CAF_CHECK(persistence::read_logs(*env, long_log, 0, 10).empty());
  for (auto& ws : workspaces)
    CAF_CHECK(!std::filesystem::exists(ws));
  CAF_CHECK_EQUAL(state().counts[js::succeeded], workspaces.size());
  CAF_CHECK(!state().sweeping);
  // ... in bounded transactions: never more records than a step looks at,
  // nor more workspaces than a step removes.
  size_t sweep_batches = 0;
  size_t long_log_batches = 0;
  bool record_before_log = false;
  for (auto& b : batches) {
    size_t records = 0;
    size_t updates = 0;
    bool log_ops = false;
    bool long_log_erased = false;
    for (auto& op : b) {
      if (op.table == "jobs") {
        ++records;
        if (op.kind == write_op::put)
          ++updates;
        if (op.kind == write_op::erase && op.key == long_log)
          long_log_erased = true;
      }
      if (op.table == "job_logs" && op.key.rfind(long_log, 0) == 0)
        log_ops = true;
    }
    if (records > 0 || log_ops)
      ++sweep_batches;
    CAF_CHECK_LESS_OR_EQUAL(records, sweep_records_per_step);
    CAF_CHECK_LESS_OR_EQUAL(updates, sweep_workspaces_per_step);
    if (log_ops)
      ++long_log_batches;
    // The record goes with the last of its log, never before.
    if (long_log_erased && long_log_batches < 2)
      record_before_log = true;
  }
  CAF_CHECK_GREATER_OR_EQUAL(sweep_batches, 3u);
  CAF_CHECK_EQUAL(long_log_batches, 2u);
  CAF_CHECK(!record_before_log);
  enroll(sys, names::store, st);
  caf::anon_send_exit(probe, caf::exit_reason::user_shutdown);
}

CAF_TEST(the controller answers between the steps of a sweep) {
  std::vector<job_record> records(2500);
  for (auto& r : records) {
    r.id = persistence::new_job_id();
    r.status = js::failed;
    r.spec = "{}";
    r.ended_at = now_ns() - std::chrono::nanoseconds(std::chrono::hours(24 * 8)).count();
  }
  put_records(*env, records);
  start(1);
  caf::anon_send(ctl, sweep_atom::value);
  auto h = self->request(ctl, caf::infinite, status_atom::value);
  // Run one message at a time until the status is answered.
  while (self->mailbox().empty() && sched.try_run_once())
    ;
  std::string stats;
  h.receive([&](component_status& x) { stats = status_json(x).dump(); },
            [](caf::error& err) { CAF_FAIL(to_string(err)); });
  CAF_CHECK(stats.find(R"("queue_depth")") != std::string::npos);
  CAF_CHECK(state().sweeping); // answered in the middle of the sweep
  consume_messages();
  CAF_CHECK(!state().sweeping);
  CAF_CHECK_EQUAL(state().counts[js::failed], 0u);
}

CAF_TEST(one pass over proc kills the processes of several jobs) {
  auto a = persistence::new_job_id();
  auto b = persistence::new_job_id();
  auto pa = spawn_orphan(a);
  auto pb = spawn_orphan(b);
  CAF_REQUIRE(pa > 0 && pb > 0);
  auto killed = kill_jobs_processes({a, b, persistence::new_job_id()}, {pa, 0, 0});
  CAF_REQUIRE_EQUAL(killed.size(), 3u);
  CAF_CHECK_GREATER_OR_EQUAL(killed[0], 1u);
  CAF_CHECK_EQUAL(killed[1], 1u);
  CAF_CHECK_EQUAL(killed[2], 0u);
  for (auto pid : {pa, pb}) {
    int status = 0;
    CAF_CHECK_EQUAL(waitpid(pid, &status, 0), pid);
    CAF_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  }
}

CAF_TEST(a crashed job actor has its processes killed by the janitor) {
  start(1);
  submit("doomed", 50);
  auto id = id_of("doomed");
  auto pid = spawn_orphan(id);
  CAF_REQUIRE(pid > 0);
  auto rec = *persistence::get_job(*env, id);
  rec.pgid = pid;
  put_record(*env, rec);
  caf::anon_send_exit(actors[id], caf::exit_reason::kill);
  consume_messages();
  int status = 0;
  CAF_CHECK_EQUAL(waitpid(pid, &status, 0), pid);
  CAF_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  CAF_CHECK_EQUAL(status_of("doomed"), js::failed);
}

CAF_TEST(a job stream that subscribes while an attempt ends keeps following the retry) {
  start(1);
  submit("flaky", 50);
  auto id = id_of("flaky");
  auto attempt = actors[id];
  auto out = std::make_shared<test::paced_stream>(64, 16 << 10);
  job_stream_options opts;
  opts.job_id = id;
  auto js = sys.spawn(job_stream, out, env, ctl, opts);
  // The stream's subscription reaches the controller first; the attempt
  // then ends (telling the controller) and is gone before the controller
  // delegates the subscription to it.
  while (sched.prioritize(js))
    sched.run_once();
  caf::anon_send(attempt, exited_atom::value, int32_t{7}, int32_t{1});
  while (sched.prioritize(attempt))
    sched.run_once();
  consume_messages();
  // Not ended: the next attempt's updates still reach the client.
  CAF_CHECK(!out->closed());
  caf::anon_send(js, complete_update(id));
  consume_messages();
  read_to_the_end(*out);
  auto events = events_read(*out);
  CAF_REQUIRE(!events.empty());
  CAF_CHECK_EQUAL(events.back(), "complete");
}

CAF_TEST(a job stream replaying for a slow client drops live lines and reads them later) {
  start(1);
  submit("chatty", 50);
  auto id = id_of("chatty");
  add_lines(id, 1, 200);
  // 64 events or 16 KiB queued for the client at most.
  auto out = std::make_shared<test::paced_stream>(64, 16 << 10);
  job_stream_options opts;
  opts.job_id = id;
  opts.from_beginning = true;
  auto js = sys.spawn(job_stream, out, env, ctl, opts);
  consume_messages();
  // The client reads nothing while the job writes 1,100 more lines, retries
  // after line 1,200, and ends after 1,300.
  for (uint64_t first = 201; first <= 1201; first += 100) {
    if (first == 1201)
      caf::anon_send(js, status_update(id, js::queued, 2));
    caf::anon_send(js, add_lines(id, first, 100));
    consume_messages();
  }
  caf::anon_send(js, complete_update(id));
  consume_messages();
  // Nothing of that is held: the lines are in the store, the retry and the
  // end wait for the replay to reach them.
  auto& st = deref<job_stream_actor::stateful_base<job_stream_state>>(js).state;
  CAF_CHECK_EQUAL(st.pending.size(), 2u); // status changes hold no lines
  CAF_CHECK_LESS_OR_EQUAL(out->peak_bytes, (16u << 10) / 2 + out->largest);
  read_to_the_end(*out);
  CAF_CHECK(!out->overflowed);
  CAF_CHECK_LESS_OR_EQUAL(out->peak_bytes, (16u << 10) / 2 + out->largest);
  // Every line once, in order; the retry between lines 1,200 and 1,201 as it
  // happened; `complete` last.
  std::vector<std::string> want{"status"};
  for (int i = 1; i <= 1300; ++i) {
    want.push_back(std::to_string(i));
    if (i == 1200)
      want.push_back("status");
  }
  want.push_back("complete");
  CAF_CHECK_EQUAL(events_read(*out), want);
}

CAF_TEST(a live job stream whose client falls behind reads the rest from the store) {
  start(1);
  submit("chatty", 50);
  auto id = id_of("chatty");
  auto out = std::make_shared<test::paced_stream>(64, 16 << 10);
  job_stream_options opts;
  opts.job_id = id;
  auto js = sys.spawn(job_stream, out, env, ctl, opts);
  consume_messages();
  // 3,000 lines (about 400 KB) to a client that does not read: queued as
  // they came, it would be cut off after 64 events.
  for (uint64_t first = 1; first <= 3000; first += 100) {
    caf::anon_send(js, add_lines(id, first, 100));
    consume_messages();
  }
  CAF_CHECK(!out->overflowed);
  CAF_CHECK(deref<job_stream_actor::stateful_base<job_stream_state>>(js).state.follow.replaying());
  caf::anon_send(js, complete_update(id));
  consume_messages();
  read_to_the_end(*out);
  CAF_CHECK(!out->overflowed);
  CAF_CHECK_LESS_OR_EQUAL(out->peak_events, 64u / 2 + 1);
  std::vector<std::string> want{"status"};
  for (int i = 1; i <= 3000; ++i)
    want.push_back(std::to_string(i));
  want.push_back("complete");
  CAF_CHECK_EQUAL(events_read(*out), want);
}

CAF_TEST_FIXTURE_SCOPE_END()
