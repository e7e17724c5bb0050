#include "actors/apps/instance.hpp"

#include <csignal>
#include <mutex>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/apps/health_checker.hpp"
#include "actors/core/retrying_request.hpp"
#include "actors/metrics/metrics.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/orphans.hpp"

namespace troupe {

namespace {

using self_ptr = instance_actor::stateful_pointer<instance_state>;
using nlohmann::json;

std::shared_ptr<spdlog::logger> log() {
  return logging::get("apps");
}

/// Retries wait as deferred steps of this actor.
defer_fn deferring(self_ptr self) {
  return [self](std::chrono::milliseconds delay, std::function<void()> fn) {
    auto key = self->state.next_deferred++;
    self->state.deferred.emplace(key, std::move(fn));
    self->delayed_send(self, delay, deferred_atom::value, key);
  };
}

bool signal_group(self_ptr self, int sig) {
  auto pgid = static_cast<pid_t>(self->state.rec.pgid);
  if (pgid <= 0)
    return false;
  auto& fn = self->state.ctx->signal;
  return fn ? fn(pgid, sig) : process::signal_group(pgid, sig);
}

json who(self_ptr self) {
  auto& r = self->state.rec;
  return json{{"app", r.app}, {"instance", r.id}, {"revision", r.revision}, {"node", r.node}};
}

/// Persists the record, then announces `type` (if any) and tells the app,
/// in that order: the app acts (drains another instance, say) only on
/// announced states, so the event stream shows causes before effects (a new
/// instance's ready before the unready of the old one it replaces). `then`
/// runs once that is done (or the write failed).
void record(self_ptr self, const std::string& type, json data = json::object(),
            std::function<void()> then = {}) {
  auto& st = self->state;
  instance_change change{st.rec.id, st.rec.state, st.ready,
                         st.rec.ports.empty() ? uint16_t{0} : st.rec.ports[0]};
  auto on_written = [self, type, data, then, change]() mutable {
    auto& st = self->state;
    if (!type.empty()) {
      auto body = who(self);
      body.update(data);
      publish_app_event(self, *st.ctx, type, body);
    }
    self->send(st.app, std::move(change));
    if (then)
      then();
  };
  write_to_store(self, while_restarting, deferring(self),
                 write_batch{persistence::put_instance_op(st.rec)}, on_written,
                 [self, type, then, change](const caf::error& err) mutable {
                   log()->error("instance {}: record not stored ({}): {}", self->state.rec.id, type,
                                caf::to_string(err));
                   self->send(self->state.app, std::move(change));
                   if (then)
                     then();
                 });
}

void set_ready(self_ptr self, bool ready, const std::string& reason) {
  auto& st = self->state;
  if (st.ready == ready)
    return;
  st.ready = ready;
  log()->info("instance {} {}: {}", st.rec.id, ready ? "ready" : "unready", reason);
  record(self, ready ? "instance.ready" : "instance.unready", {{"reason", reason}});
}

/// The instance is done: no process left. Records `stopped`, tells the
/// waiters and the app, and ends.
void finish(self_ptr self) {
  auto& st = self->state;
  if (st.terminated)
    return;
  st.terminated = true;
  st.ready = false;
  st.rec.state = "stopped";
  st.rec.pgid = 0;
  record(self, "instance.stopped", {{"reason", st.rec.reason}}, [self] {
    for (auto& rp : self->state.stop_waiters)
      rp.deliver(ok_atom::value);
    self->state.stop_waiters.clear();
    self->quit();
  });
}

/// SIGTERM now, SIGKILL after gracePeriodSeconds.
void terminate(self_ptr self) {
  auto& st = self->state;
  if (!st.running) {
    finish(self);
    return;
  }
  st.rec.state = "stopping";
  record(self, "");
  signal_group(self, SIGTERM);
  self->delayed_send(self, std::chrono::seconds(st.spec.grace_period_seconds), kill_atom::value,
                     ++st.grace_seq);
}

/// Drain: waits while the proxy reports requests in flight, up to drainSeconds.
void check_in_flight(self_ptr self) {
  auto& st = self->state;
  if (st.rec.state != "draining")
    return;
  auto proxy = lookup(self->system(), names::traffic);
  if (!proxy || self->clock().now() >= st.drain_deadline) {
    terminate(self);
    return;
  }
  self->request(*proxy, std::chrono::seconds(1), in_flight_atom::value, st.rec.app, st.rec.id)
      .then(
          [self](uint32_t n) {
            if (n == 0)
              terminate(self);
            else
              self->delayed_send(self, std::chrono::milliseconds(200), tick_atom::value);
          },
          [self](caf::error&) { terminate(self); });
}

void on_output(self_ptr self, process::output& out) {
  auto& st = self->state;
  if (out.count == 0) {
    if (!out.eof && st.watch)
      st.watch->resume(out.stream);
    return;
  }
  log_ingest batch;
  batch.labels.service = st.rec.app;
  batch.labels.instance = st.rec.id;
  batch.labels.source = "app";
  batch.ts_ns = out.ts_ns;
  batch.stream = out.stream;
  batch.lines = std::move(out.lines);
  batch.count = out.count;
  ++st.pipeline_in_flight;
  // Credit: the pipe is read on while a few batches wait for their commit.
  if (!out.eof && st.pipeline_in_flight < instance_state::max_pipeline_batches && st.watch)
    st.watch->resume(out.stream);
  else if (!out.eof)
    st.held_streams.push_back(out.stream);
  auto resume = [self] {
    auto& st = self->state;
    --st.pipeline_in_flight;
    auto held = std::move(st.held_streams);
    st.held_streams.clear();
    for (auto s : held)
      if (st.watch)
        st.watch->resume(s);
  };
  auto router = lookup(self->system(), names::logs);
  if (!router) {
    log()->warn("instance {}: {} lines dropped: the log router is not running", st.rec.id,
                batch.count);
    resume();
    return;
  }
  self->request(*router, std::chrono::seconds(30), ingest_atom::value, std::move(batch))
      .then([resume](uint64_t) { resume(); },
            [self, resume](caf::error& err) {
              log()->warn("instance {}: output lines lost: {}", self->state.rec.id,
                          caf::to_string(err));
              resume();
            });
}

void on_exit(self_ptr self, int32_t code, int32_t sig);
std::vector<std::string> environment(const instance_state& st);

void stop_checkers(self_ptr self) {
  for (auto& c : self->state.checkers)
    self->send_exit(c, caf::exit_reason::user_shutdown);
  self->state.checkers.clear();
}

/// One checker per probe role while the process runs (probes of a dead
/// process would only count failures).
void start_checkers(self_ptr self) {
  auto& st = self->state;
  if (!st.ctx->probes)
    return;
  auto owner = caf::actor_cast<health_owner_actor>(self);
  auto cwd = st.spec.working_dir.empty() ? st.ctx->work_dir : st.spec.working_dir;
  auto add = [&](const app_probe& p, apps::probe_role role) {
    apps::health_checker_config cfg;
    cfg.instance = st.rec.id;
    cfg.role = role;
    cfg.request = probe_for(st.spec, p, st.rec.ports, environment(st), cwd);
    if (role == apps::probe_role::readiness)
      cfg.startup_interval = std::chrono::milliseconds(100);
    auto c = self->system().spawn(apps::health_checker, cfg, owner, st.ctx->probes);
    st.checkers.push_back(c);
  };
  if (st.spec.readiness)
    add(*st.spec.readiness, apps::probe_role::readiness);
  if (st.spec.liveness)
    add(*st.spec.liveness, apps::probe_role::liveness);
}

void on_health(self_ptr self, health_transition& t) {
  auto& st = self->state;
  if (!st.running || st.leaving)
    return;
  if (t.report.probe == "readiness" || !st.spec.readiness)
    st.health = t.report;
  if (t.event == "ready")
    set_ready(self, true, "readiness probe healthy");
  else if (t.event == "unready")
    set_ready(self, false, "readiness probe failing: " + t.report.last_error);
  else if (t.event == "live_failed") {
    st.kill_reason = "liveness probe failed " + std::to_string(t.report.consecutive_failures) +
                     " times: " + t.report.last_error;
    log()->warn("instance {}: {}; restarting it", st.rec.id, st.kill_reason);
    signal_group(self, SIGKILL);
  }
}

/// Samples CPU and RSS (the cgroup's accounting, else the process tree).
/// `record`: adds the sample to the windows and tells the app; otherwise
/// it is the baseline a fresh process's first CPU rate is measured from.
void take_sample(self_ptr self, bool record) {
  auto& st = self->state;
  if (!st.running || st.rec.pgid <= 0)
    return;
  auto now = apps::sample_instance(st.limits, static_cast<pid_t>(st.rec.pgid));
  st.usage.rss_bytes = now.rss_bytes;
  st.usage.sampled_at_ns = now_ns();
  if (!record) {
    st.last_sample = now;
    return;
  }
  st.usage.cpu_percent = st.last_sample.at_ns > 0 ? apps::cpu_percent(st.last_sample, now) : 0;
  st.last_sample = now;
  st.windows.add(self->clock().now(), st.usage.cpu_percent,
                 static_cast<double>(st.usage.rss_bytes));
  self->send(st.app, st.usage);
}

void on_launched(self_ptr self, instance_launched r) {
  auto& st = self->state;
  if (!r.error.empty()) {
    st.rec.reason = r.error;
    log()->warn("instance {} did not start: {}", st.rec.id, r.error);
    st.running = true; // the failed start counts as an exit
    on_exit(self, 127, 0);
    return;
  }
  st.running = true;
  st.watch = std::move(r.watch);
  self->attach_functor([w = st.watch] {
    if (w)
      w->close();
  });
  st.rec.pgid = r.pid;
  st.rec.started_at = now_ns();
  st.rec.exit_code.reset();
  st.rec.signal.reset();
  st.backoff.started(restart_backoff::clock::now());
  st.oom_kills_at_start = st.limits.usage().oom_kills;
  take_sample(self, false);
  if (st.leaving) {
    // Stopped while starting: it never served.
    signal_group(self, SIGKILL);
    return;
  }
  st.rec.state = "running";
  log()->info("instance {} started (pid {}, port {})", st.rec.id, r.pid,
              st.rec.ports.empty() ? 0 : st.rec.ports[0]);
  record(self, "instance.started",
         {{"pid", r.pid},
          {"port", st.rec.ports.empty() ? 0 : st.rec.ports[0]},
          {"restarts", st.rec.restarts},
          {"reason", st.rec.reason}});
  start_checkers(self);
  // Without a readiness probe a running process is ready.
  if (!st.spec.readiness)
    set_ready(self, true, "the process runs (no readiness probe)");
}

std::vector<std::string> environment(const instance_state& st) {
  std::map<std::string, std::string> vars;
  for (auto& kv : st.ctx->base_env) {
    auto eq = kv.find('=');
    if (eq != std::string::npos)
      vars[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  instance_identity who{st.rec.id, st.rec.node, st.rec.ports};
  for (auto& [k, v] : app_instance_env(st.spec, who))
    vars[k] = v;
  std::vector<std::string> out;
  for (auto& [k, v] : vars)
    out.push_back(k + "=" + v);
  return out;
}

/// Starts the process off this actor's thread; `adopting` kills what is left
/// of this instance id first.
void start_process(self_ptr self, bool adopting) {
  auto& st = self->state;
  st.rec.state = "starting";
  instance_launch req;
  req.opts.argv = app_argv(st.spec, st.rec.ports);
  req.opts.env = environment(st);
  req.opts.cwd = st.spec.working_dir.empty() ? st.ctx->work_dir : st.spec.working_dir;
  if (adopting)
    req.reap_instance = st.rec.id;
  st.limits.apply(req.opts);
  caf::weak_actor_ptr weak = self->ctrl();
  req.cb.on_output = [weak](process::output o) {
    if (auto hdl = caf::actor_cast<instance_actor>(weak))
      caf::anon_send(hdl, std::move(o));
  };
  req.cb.on_exit = [weak](process::exit_status es) {
    if (auto hdl = caf::actor_cast<instance_actor>(weak))
      caf::anon_send(hdl, exited_atom::value, static_cast<int32_t>(es.exit_code),
                     static_cast<int32_t>(es.signal));
  };
  // The result comes back as a deferred step; a result for a dead actor
  // kills its child.
  struct slot {
    std::mutex mtx;
    bool abandoned = false;
    std::optional<instance_launched> result;
  };
  auto sl = std::make_shared<slot>();
  auto key = st.next_deferred++;
  st.deferred.emplace(key, [self, sl] {
    std::optional<instance_launched> r;
    {
      std::lock_guard<std::mutex> g{sl->mtx};
      r = std::move(sl->result);
      sl->result.reset();
    }
    if (r)
      on_launched(self, std::move(*r));
  });
  self->attach_functor([sl] {
    std::lock_guard<std::mutex> g{sl->mtx};
    sl->abandoned = true;
    if (sl->result && sl->result->pid > 0)
      process::signal_group(sl->result->pid, SIGKILL);
  });
  auto done = [sl, weak, key](instance_launched r) {
    {
      std::lock_guard<std::mutex> g{sl->mtx};
      if (sl->abandoned) {
        if (r.pid > 0)
          process::signal_group(r.pid, SIGKILL);
        if (r.watch)
          r.watch->close();
        return;
      }
      sl->result = std::move(r);
    }
    if (auto hdl = caf::actor_cast<instance_actor>(weak))
      caf::anon_send(hdl, deferred_atom::value, key);
  };
  if (st.ctx->launcher)
    st.ctx->launcher(std::move(req), std::move(done));
  else
    launch_instance(*st.ctx->io, std::move(req), std::move(done));
}

void on_exit(self_ptr self, int32_t code, int32_t sig) {
  auto& st = self->state;
  if (!st.running)
    return;
  st.running = false;
  stop_checkers(self);
  // Whatever the process left in its group goes with it.
  signal_group(self, SIGKILL);
  if (st.watch)
    st.watch->close();
  st.watch.reset();
  st.ready = false;
  st.rec.ended_at = now_ns();
  st.rec.exit_code = code >= 0 ? std::optional<int>{code} : std::nullopt;
  st.rec.signal = sig != 0 ? std::optional<int>{sig} : std::nullopt;
  json ended = json::object();
  if (code >= 0)
    ended["exit_code"] = code;
  if (sig != 0)
    ended["signal"] = sig;
  if (st.leaving) {
    st.rec.reason = st.rec.reason.empty() ? "stopped" : st.rec.reason;
    finish(self);
    return;
  }
  auto oom_kills = st.limits.usage().oom_kills;
  bool oom = oom_kills > st.oom_kills_at_start;
  if (oom)
    ended["oom_killed"] = true;
  auto why = oom ? "OOM-killed: the kernel killed it for exceeding its memory limit (" +
                       std::to_string(st.spec.resources.memory_bytes) + " bytes, " +
                       apps::to_string(st.limits.mechanism()) + ")"
             : !st.kill_reason.empty()               ? st.kill_reason
             : !st.rec.reason.empty() && code == 127 ? st.rec.reason
             : sig != 0                              ? "killed by signal " + std::to_string(sig)
                                                     : "exited with code " + std::to_string(code);
  st.kill_reason.clear();
  ended["reason"] = why;
  if (!restarts_after(st.spec.restart_policy, code, sig)) {
    st.rec.state = "exited";
    st.rec.reason = why + "; restartPolicy " + st.spec.restart_policy + " keeps it down";
    ended["reason"] = st.rec.reason;
    record(self, "instance.exited", ended);
    return;
  }
  auto delay = st.backoff.exited(restart_backoff::clock::now());
  st.rec.restarts += 1;
  st.rec.state = "backoff";
  st.rec.reason = why + "; restarting in " + std::to_string(delay.count()) + "ms";
  log()->warn("instance {} {}", st.rec.id, st.rec.reason);
  // instance.restarting follows instance.exited on the event stream.
  auto restarting = who(self);
  restarting.update(
      {{"backoff_ms", delay.count()}, {"restarts", st.rec.restarts}, {"reason", why}});
  record(self, "instance.exited", ended, [self, restarting] {
    publish_app_event(self, *self->state.ctx, "instance.restarting", restarting);
  });
  self->delayed_send(self, delay, restart_atom::value, ++st.restart_seq);
}

} // namespace

instance_status instance_state::status() const {
  instance_status x;
  x.id = rec.id;
  x.node = rec.node;
  x.pid = running ? rec.pgid : 0;
  x.ports = rec.ports;
  x.revision = rec.revision;
  x.state = rec.state;
  x.ready = ready;
  x.restarts = rec.restarts;
  x.started_at_ns = rec.started_at;
  x.limits = apps::to_string(limits.mechanism());
  x.reason = rec.reason;
  if (running) {
    x.cpu_percent = usage.cpu_percent;
    x.rss_bytes = usage.rss_bytes;
  }
  if (spec.readiness || spec.liveness) {
    x.health = health.status;
    x.consecutive_failures = health.consecutive_failures;
    x.last_check_ns = health.last_check_ns;
    x.last_error = health.last_error;
  }
  return x;
}

apps::probe_request probe_for(const app_spec& spec, const app_probe& p,
                              const std::vector<uint16_t>& ports, std::vector<std::string> env,
                              std::string cwd) {
  apps::probe_request r;
  auto& x = r.spec;
  x.kind = p.type == app_probe::kind::http_get     ? apps::probe_kind::http
           : p.type == app_probe::kind::tcp_socket ? apps::probe_kind::tcp
                                                   : apps::probe_kind::exec;
  x.path = p.path;
  auto i = app_port_index(spec, p);
  x.port = i < ports.size() ? ports[i] : 0;
  if (p.command.shell && !p.command.words.empty())
    x.command = {"/bin/sh", "-c", p.command.words[0]};
  else
    x.command = p.command.words;
  x.initial_delay = std::chrono::seconds(p.initial_delay_seconds);
  x.interval = std::chrono::seconds(p.interval_seconds);
  x.timeout = std::chrono::seconds(p.timeout_seconds);
  x.failure_threshold = static_cast<uint32_t>(p.failure_threshold);
  x.success_threshold = static_cast<uint32_t>(p.success_threshold);
  r.env = std::move(env);
  r.cwd = std::move(cwd);
  return r;
}

bool restarts_after(const std::string& policy, int32_t exit_code, int32_t signal) {
  if (policy == "Never")
    return false;
  if (policy == "OnFailure")
    return exit_code != 0 || signal != 0;
  return true;
}

void launch_instance(process::io& io, instance_launch req,
                     std::function<void(instance_launched)> done) {
  process::launch_request launch;
  launch.opts = std::move(req.opts);
  launch.max_line = req.max_line;
  launch.cb = std::move(req.cb);
  if (!req.reap_instance.empty())
    launch.before = [id = std::move(req.reap_instance)](instance_launched&) {
      auto killed = orphans::kill_tagged("TROUPE_INSTANCE", {id}, {0});
      if (killed.at(0) > 0)
        log()->warn("instance {}: {} processes left by its previous actor killed", id, killed[0]);
    };
  process::launch(io, std::move(launch), std::move(done));
}

instance_actor::behavior_type instance(instance_actor::stateful_pointer<instance_state> self,
                                       std::shared_ptr<const apps_env> ctx, app_actor app,
                                       app_target target, std::string id) {
  auto& st = self->state;
  st.ctx = ctx;
  st.app = std::move(app);
  st.backoff = restart_backoff{ctx->backoff};
  try {
    st.spec = parse_app_spec_json(target.spec);
    st.rec.ports = ctx->ports->allocate(st.spec.container_ports.size());
  } catch (const std::exception& e) {
    self->quit(caf::make_error(ec::invalid_argument, "instance " + id + ": " + e.what()));
    return instance_actor::behavior_type::make_empty_behavior();
  }
  try {
    apps::resource_limits want{st.spec.resources.cpu_millis, st.spec.resources.memory_bytes};
    if (want.cpu_millis > 0 || want.memory_bytes > 0)
      st.limits = apps::limit_group::create(ctx->limits, target.name, id, want);
  } catch (const std::exception& e) {
    log()->warn("instance {}: limits not applied: {}", id, e.what());
  }
  self->attach_functor([g = st.limits] { g.remove(); });
  st.rec.id = id;
  st.rec.app = target.name;
  st.rec.revision = target.revision;
  st.rec.node = ctx->node_name;
  // Whatever ends this actor, its ports go back and its process goes too:
  // a successor (after a crash) starts a fresh one, never beside this one.
  self->attach_functor([ctx, ports = st.rec.ports] { ctx->ports->release(ports); });
  // Without its app nobody reconciles it: it goes, and the app's successor
  // starts fresh instances.
  self->monitor(st.app);
  self->set_down_handler([self](caf::down_msg& dm) {
    if (dm.source != self->state.app.address())
      return;
    // (A crash of this actor leaves its process to the successor of its id,
    // which kills it by TROUPE_INSTANCE before starting: never two.)
    if (self->state.running)
      signal_group(self, SIGKILL);
    self->quit(dm.reason);
  });
  st.usage.id = id;
  start_process(self, true);
  // Zero turns sampling off (deterministic tests).
  if (ctx->cfg.sample_interval.count() > 0)
    self->delayed_send(self, ctx->cfg.sample_interval, sample_atom::value);
  return {
      [self](process::output& out) { on_output(self, out); },
      [self](exited_atom, int32_t code, int32_t sig) { on_exit(self, code, sig); },
      [self](drain_atom) {
        auto& st = self->state;
        if (st.leaving)
          return;
        st.leaving = true;
        st.rec.reason = "drained";
        if (!st.running) {
          finish(self);
          return;
        }
        st.rec.state = "draining";
        if (st.ready)
          set_ready(self, false, "draining");
        else
          record(self, "");
        st.drain_deadline = self->clock().now() + std::chrono::seconds(st.spec.drain_seconds);
        check_in_flight(self);
      },
      [self](kill_atom, uint64_t seq) {
        if (seq == self->state.grace_seq && self->state.running)
          signal_group(self, SIGKILL);
      },
      [self](restart_atom, uint64_t seq) {
        auto& st = self->state;
        if (seq == st.restart_seq && !st.leaving && !st.running)
          start_process(self, false);
      },
      [self](deferred_atom, uint64_t key) {
        auto i = self->state.deferred.find(key);
        if (i == self->state.deferred.end())
          return;
        auto fn = std::move(i->second);
        self->state.deferred.erase(i);
        fn();
      },
      [self](tick_atom) { check_in_flight(self); },
      [self](ejected_atom) {
        // Readiness decides whether it gets traffic again (its checker is
        // the first when it has one); without one, liveness looks.
        auto& st = self->state;
        if (!st.checkers.empty())
          self->send(st.checkers.front(), ejected_atom::value);
      },
      [self](health_transition& t) { on_health(self, t); },
      [self](get_atom) { return self->state.status(); },
      [self](sample_atom) {
        auto& st = self->state;
        if (st.terminated)
          return;
        take_sample(self, true);
        self->delayed_send(self, st.ctx->cfg.sample_interval, sample_atom::value);
      },
      [self](usage_atom) {
        auto& st = self->state;
        auto x = st.usage;
        x.id = st.rec.id;
        if (!st.running) {
          x.cpu_percent = 0;
          x.rss_bytes = 0;
        }
        st.windows.summarize(self->clock().now(), x.cpu, x.rss);
        return x;
      },
      [self](shutdown_atom) -> caf::result<ok_atom> {
        auto& st = self->state;
        auto rp = self->make_response_promise<ok_atom>();
        st.stop_waiters.push_back(rp);
        if (!st.leaving) {
          st.leaving = true;
          st.rec.reason = "the node shut down";
          if (st.ready)
            st.ready = false;
          terminate(self);
        }
        return rp;
      },
  };
}

} // namespace troupe
