#include "actors/jobs/job.hpp"

#include <csignal>
#include <filesystem>
#include <mutex>
#include <optional>

#include <fnmatch.h>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/core/names.hpp"
#include "actors/core/retrying_request.hpp"
#include "actors/jobs/job_controller.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/host.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

using self_ptr = job_actor::stateful_pointer<job_state>;
namespace js = persistence::job_status;

std::shared_ptr<spdlog::logger> log() {
  return logging::get("job");
}

/// A batch of output lines waits longer for its commit than a record: the
/// router writes it to two tables.
constexpr retry_policy output_writes{while_restarting.retries, while_restarting.delay,
                                     std::chrono::seconds(60)};

/// Retries wait as deferred steps of this actor.
defer_fn deferring(self_ptr self) {
  return [self](std::chrono::milliseconds delay, std::function<void()> fn) {
    auto key = self->state.next_deferred++;
    self->state.deferred.emplace(key, std::move(fn));
    self->delayed_send(self, delay, deferred_atom::value, key);
  };
}

/// The write (or batch of `lines` output lines) could not be stored while
/// the store or router restarted: the attempt ends with a store failure.
void give_up(self_ptr self, const caf::error& err, uint32_t lines = 0) {
  auto why = caf::to_string(err);
  if (lines > 0)
    log()->error("job {}: giving up on writing {} output lines: {}", self->state.rec.id, lines,
                 why);
  else
    log()->error("job {}: giving up on a store write: {}", self->state.rec.id, why);
  self->quit(caf::make_error(ec::store_failure, why));
}

/// Writes `batch`; on success runs `then`. A store that is briefly away
/// (restarting under its supervisor) is retried rather than losing the write.
template <class Then> void write(self_ptr self, write_batch batch, Then then) {
  write_to_store(self, while_restarting, deferring(self), std::move(batch), std::move(then),
                 [self](const caf::error& err) { give_up(self, err); });
}

write_op record_op(const persistence::job_record& r) {
  return write_op{write_op::put, "jobs", r.id, persistence::encode(r)};
}

void notify(self_ptr self, job_update up) {
  for (auto& sub : self->state.subscribers)
    self->send(sub, up);
}

void maybe_finish(self_ptr self);

void stop_process(self_ptr self, job_state::stop_kind why, std::chrono::milliseconds grace) {
  auto& st = self->state;
  // An attempt whose main process already exited ends by its exit status.
  if (st.finishing || st.stop != job_state::stop_kind::none || st.exited)
    return;
  st.stop = why;
  if (!st.spawned) {
    // Not started yet: start_process sees `stop`, or, while launching,
    // on_launched kills the process as soon as it exists.
    return;
  }
  process::signal_group(static_cast<pid_t>(st.rec.pgid), SIGTERM);
  self->delayed_send(self, grace, kill_atom::value);
}

void finalize(self_ptr self) {
  auto& st = self->state;
  st.finishing = true;
  auto& rec = st.rec;
  using sk = job_state::stop_kind;
  std::string status;
  switch (st.stop) {
  case sk::cancelled:
    status = js::cancelled;
    break;
  case sk::timed_out:
    status = js::timed_out;
    break;
  case sk::interrupted:
    status = js::lost;
    break;
  case sk::none:
    status = st.exit_code == 0 ? js::succeeded : js::failed;
    break;
  }
  if (st.spawned || st.exit_code >= 0) {
    rec.exit_code = st.exit_code >= 0 ? std::optional<int>{st.exit_code} : std::nullopt;
    rec.signal = st.signal != 0 ? std::optional<int>{st.signal} : std::nullopt;
  }
  if (status == js::timed_out)
    rec.reason = "timed out after " + std::to_string(st.spec.timeout_seconds) + "s";
  else if (status == js::lost)
    rec.reason = "interrupted: the node shut down while the job ran";
  else if (status == js::cancelled)
    rec.reason = "cancelled";
  else if (status == js::failed && rec.reason.empty())
    rec.reason = st.signal != 0 ? "killed by signal " + std::to_string(st.signal)
                                : "exited with code " + std::to_string(st.exit_code);
  bool retry = (status == js::failed || status == js::timed_out || status == js::lost) &&
               rec.attempt <= rec.retries;
  rec.pgid = 0;
  rec.ended_at = now_ns();
  job_update up;
  up.job_id = rec.id;
  if (retry) {
    auto backoff = retry_backoff(st.ctx->cfg, rec.attempt);
    rec.reason = "attempt " + std::to_string(rec.attempt) + " " + status + " (" + rec.reason +
                 "); retrying in " + std::to_string(backoff.count()) + "ms";
    rec.status = js::queued;
    rec.attempt += 1;
    rec.not_before = now_ns() + backoff.count() * 1'000'000;
    rec.success.reset();
    up.status = js::queued;
    up.attempt = rec.attempt;
  } else {
    rec.status = status;
    rec.success = status == js::succeeded;
    up.status = status;
    up.attempt = rec.attempt;
    up.complete = true;
    up.success = *rec.success;
    up.exit_code = rec.exit_code.value_or(-1);
  }
  // Every output batch is committed by now (pending_writes is 0).
  up.after_seq = st.next_seq - 1;
  write(self, write_batch{record_op(rec)}, [self, up, retry]() mutable {
    auto& st = self->state;
    log()->info("job {} {} (attempt {}, exit code {}){}", st.rec.id, up.status,
                retry ? st.rec.attempt - 1 : st.rec.attempt, st.exit_code,
                st.rec.reason.empty() ? "" : ": " + st.rec.reason);
    notify(self, up);
    self->send(st.controller, done_atom::value, st.rec.id, st.rec.status, retry,
               retry ? st.subscribers : std::vector<job_subscriber_actor>{});
    for (auto& rp : st.shutdown_waiters)
      rp.deliver(ok_atom::value);
    st.shutdown_waiters.clear();
    self->quit();
  });
}

void maybe_finish(self_ptr self) {
  auto& st = self->state;
  if (!st.finishing && st.exited && st.out_eof && st.err_eof && st.pending_writes == 0)
    finalize(self);
}

/// Hands a batch of lines to the log router, which writes it once (the
/// job's index and the global log), fans it out to live readers (the job's
/// streams among them) and answers with its first global seq; then runs
/// `then(batch)`. A router or store that is briefly away
/// (restarting under the supervisor) is retried: the batch is the only copy.
template <class Then> void ingest(self_ptr self, std::shared_ptr<log_ingest> batch, Then then) {
  retrying_request(
      self, names::logs, output_writes, deferring(self),
      // The message takes a copy; ours stays for a retry.
      [batch](auto* sender, const log_router_actor& router, caf::timespan timeout) {
        return sender->request(router, timeout, ingest_atom::value, *batch);
      },
      [batch, then](uint64_t first) mutable {
        if (first == 0)
          return caf::make_error(ec::store_failure, std::string{"the log batch was not stored"});
        then(*batch);
        return caf::error{};
      },
      [self, count = batch->count](const caf::error& err) { give_up(self, err, count); });
}

void on_output(self_ptr self, process::output& out) {
  auto& st = self->state;
  if (out.count == 0) {
    if (out.eof)
      (out.stream == 1 ? st.out_eof : st.err_eof) = true;
    else if (st.watch)
      st.watch->resume(out.stream);
    maybe_finish(self);
    return;
  }
  auto batch = std::make_shared<log_ingest>();
  batch->labels.service = st.rec.name.empty() ? "job" : st.rec.name;
  batch->labels.instance = st.rec.id;
  batch->labels.source = "job";
  batch->labels.request_id = st.rec.request_id;
  batch->index = st.rec.id;
  batch->first_seq = st.next_seq;
  batch->ts_ns = out.ts_ns;
  batch->stream = out.stream;
  batch->lines = std::move(out.lines);
  batch->count = out.count;
  st.next_seq += out.count;
  ++st.pending_writes;
  ++st.pipeline_in_flight;
  // Credit: the pipe is read on while at most a few batches wait for their
  // commit, so memory stays bounded however fast the job writes, while
  // reading overlaps the commits.
  if (out.eof)
    (out.stream == 1 ? st.out_eof : st.err_eof) = true;
  else if (st.pipeline_in_flight < job_state::max_pipeline_batches && st.watch)
    st.watch->resume(out.stream);
  else
    st.held_streams.push_back(out.stream);
  ingest(self, std::move(batch), [self](const log_ingest&) {
    auto& st = self->state;
    --st.pending_writes;
    --st.pipeline_in_flight;
    auto held = std::move(st.held_streams);
    st.held_streams.clear();
    for (auto s : held)
      if (st.watch)
        st.watch->resume(s);
    maybe_finish(self);
  });
}

/// A launch result on its way to the job actor. If the actor ends first,
/// whichever of the two comes last kills the orphan child.
class launch_slot {
public:
  /// False if the actor is gone (the child was killed).
  bool deliver(launch_result r) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (abandoned_) {
      discard(r);
      return false;
    }
    result_ = std::move(r);
    return true;
  }

  std::optional<launch_result> take() {
    std::lock_guard<std::mutex> guard{mtx_};
    auto r = std::move(result_);
    result_.reset();
    return r;
  }

  void abandon() {
    std::lock_guard<std::mutex> guard{mtx_};
    abandoned_ = true;
    if (result_)
      discard(*result_);
    result_.reset();
  }

private:
  static void discard(launch_result& r) {
    if (r.pid > 0)
      process::signal_group(r.pid, SIGKILL);
    if (r.watch)
      r.watch->close();
  }

  std::mutex mtx_;
  bool abandoned_ = false;
  std::optional<launch_result> result_;
};

/// The launch ended: the attempt runs (and is recorded with its process
/// group), or ends with the reason it could not start.
void on_launched(self_ptr self, launch_result r) {
  auto& st = self->state;
  if (!r.error.empty()) {
    st.rec.reason = r.error;
    st.exited = st.out_eof = st.err_eof = true;
    st.exit_code = r.exit_code;
    maybe_finish(self);
    return;
  }
  st.spawned = true;
  st.rec.pgid = r.pid;
  st.watch = std::move(r.watch);
  // Whatever ends this actor, the watch lets go of the fds. (The functor
  // holds its own reference: the state is gone by the time it runs.)
  self->attach_functor([w = st.watch] { w->close(); });
  if (st.stop != job_state::stop_kind::none) {
    // Cancelled (or shut down) while starting: it never ran for anyone.
    process::signal_group(r.pid, SIGKILL);
  } else if (st.spec.timeout_seconds > 0) {
    self->delayed_send(self, std::chrono::seconds(st.spec.timeout_seconds), timeout_atom::value);
  }
  log()->info("job {} started (attempt {}, pid {})", st.rec.id, st.rec.attempt, r.pid);
  // Record the process group for crash recovery; the attempt's final record
  // waits for this write, so a retried write can never land after it.
  ++st.pending_writes;
  write(self, write_batch{record_op(st.rec)}, [self] {
    --self->state.pending_writes;
    maybe_finish(self);
  });
}

/// Asks the launcher for the attempt's process: fork/exec and preparing the
/// workspace block, so they never run on this actor's scheduler thread.
void start_process(self_ptr self) {
  auto& st = self->state;
  if (st.stop != job_state::stop_kind::none) {
    st.exited = st.out_eof = st.err_eof = true;
    maybe_finish(self);
    return;
  }
  launch_request req;
  req.workspace = st.rec.workspace;
  req.cwd_shown = st.spec.cwd.empty() ? st.rec.workspace : st.spec.cwd;
  req.max_line = st.ctx->cfg.max_line_bytes;
  req.opts.argv = st.spec.argv;
  req.opts.env = job_environment(*st.ctx, st.rec, st.spec);
  req.opts.cwd = st.spec.cwd.empty() ? st.rec.workspace : st.rec.workspace + "/" + st.spec.cwd;
  req.opts.rlimits = {st.spec.resources.cpu_seconds, st.spec.resources.memory_mb,
                      st.spec.resources.open_files};
  if (auto& who = st.ctx->cfg.identity; who && who->switches)
    req.opts.user = process::credentials{who->uid, who->gid, who->groups};
  // The launcher's threads reach this actor through a weak handle: a dead
  // job actor's late output is simply dropped.
  caf::weak_actor_ptr weak = self->ctrl();
  req.cb.on_output = [weak](process::output o) {
    if (auto hdl = caf::actor_cast<job_actor>(weak))
      caf::anon_send(hdl, std::move(o));
  };
  req.cb.on_exit = [weak](process::exit_status es) {
    if (auto hdl = caf::actor_cast<job_actor>(weak))
      caf::anon_send(hdl, exited_atom::value, static_cast<int32_t>(es.exit_code),
                     static_cast<int32_t>(es.signal));
  };
  // The result comes back as a deferred step of this actor.
  auto slot = std::make_shared<launch_slot>();
  auto key = st.next_deferred++;
  st.deferred.emplace(key, [self, slot] {
    if (auto r = slot->take())
      on_launched(self, std::move(*r));
  });
  self->attach_functor([slot] { slot->abandon(); });
  auto done = [slot, weak, key](launch_result r) {
    if (!slot->deliver(std::move(r)))
      return;
    if (auto hdl = caf::actor_cast<job_actor>(weak))
      caf::anon_send(hdl, deferred_atom::value, key);
  };
  if (st.ctx->launcher)
    st.ctx->launcher(std::move(req), std::move(done));
  else
    launch_process(*st.ctx->io, st.ctx->cfg.identity, std::move(req), std::move(done));
}

} // namespace

std::chrono::milliseconds retry_backoff(const jobs_config& cfg, int attempt) {
  auto d = cfg.retry_backoff_initial;
  for (int i = 1; i < attempt && d < cfg.retry_backoff_max; ++i)
    d *= 2;
  return std::min(d, cfg.retry_backoff_max);
}

std::vector<std::string> inherited_environment(const std::vector<std::string>& environ,
                                               const std::string& patterns) {
  static const char* const always[] = {"PATH", "HOME", "LANG", "LC_*", "TZ", "USER", "SHELL"};
  auto matches = [&](const std::string& name) {
    for (auto* p : always)
      if (::fnmatch(p, name.c_str(), 0) == 0)
        return true;
    std::string_view rest = patterns;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      std::string p{rest.substr(0, comma)};
      if (!p.empty() && ::fnmatch(p.c_str(), name.c_str(), 0) == 0)
        return true;
      if (comma == std::string_view::npos)
        break;
      rest.remove_prefix(comma + 1);
    }
    return false;
  };
  std::vector<std::string> out;
  for (auto& kv : environ) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      continue;
    auto name = kv.substr(0, eq);
    if (name.rfind("TROUPE_", 0) != 0 && matches(name))
      out.push_back(kv);
  }
  return out;
}

void launch_process(process::io& io, std::optional<job_identity> jobs, launch_request req,
                    std::function<void(launch_result)> done) {
  process::launch_request launch;
  launch.opts = std::move(req.opts);
  launch.max_line = req.max_line;
  launch.cb = std::move(req.cb);
  launch.before = [jobs = std::move(jobs), cwd = launch.opts.cwd, shown = std::move(req.cwd_shown),
                   workspace = std::move(req.workspace)](launch_result& r) {
    std::error_code ec;
    if (!std::filesystem::is_directory(cwd, ec)) {
      r.error = "working directory " + shown + " does not exist in the workspace";
      r.exit_code = -1;
      return;
    }
    host::hand_over_workspace(workspace, jobs);
  };
  process::launch(io, std::move(launch), std::move(done));
}

std::vector<std::string> job_environment(const job_env& ctx, const persistence::job_record& rec,
                                         const job_spec& spec) {
  std::map<std::string, std::string> vars;
  for (auto& kv : ctx.base_env) {
    auto eq = kv.find('=');
    if (eq != std::string::npos)
      vars[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (auto& who = ctx.cfg.identity) {
    vars["USER"] = who->user;
    vars["LOGNAME"] = who->user;
    vars["HOME"] = who->home;
    vars["SHELL"] = who->shell;
  }
  for (auto& [k, v] : spec.env)
    vars[k] = v;
  vars["TROUPE_JOB_ID"] = rec.id;
  vars["TROUPE_JOB_ATTEMPT"] = std::to_string(rec.attempt);
  vars["TROUPE_REQUEST_ID"] = rec.request_id;
  vars["TROUPE_NODE"] = ctx.node_name;
  std::vector<std::string> out;
  out.reserve(vars.size());
  for (auto& [k, v] : vars)
    out.push_back(k + "=" + v);
  return out;
}

job_actor::behavior_type job(job_actor::stateful_pointer<job_state> self,
                             std::shared_ptr<const job_env> ctx, std::string id,
                             job_controller_actor controller,
                             std::vector<job_subscriber_actor> subscribers) {
  auto& st = self->state;
  st.ctx = ctx;
  st.controller = std::move(controller);
  st.subscribers = std::move(subscribers);
  auto rec = persistence::get_job(*ctx->env, id);
  if (!rec) {
    self->quit(caf::make_error(ec::not_found, "job " + id));
    return job_actor::behavior_type::make_empty_behavior();
  }
  st.rec = std::move(*rec);
  try {
    st.spec = job_spec_from_json(st.rec.spec);
  } catch (const std::exception& e) {
    self->quit(caf::make_error(ec::invalid_argument, "job " + id + ": " + e.what()));
    return job_actor::behavior_type::make_empty_behavior();
  }
  st.next_seq = persistence::last_log_seq(*ctx->env, id) + 1;
  for (auto& sub : st.subscribers)
    self->monitor(sub);
  self->monitor(st.controller);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.controller.address()) {
      // Without its controller no one would record the outcome: stop the
      // process; the next controller's recovery reconciles the record.
      kill_job_processes(st.rec.id, st.rec.pgid);
      self->quit(dm.reason);
      return;
    }
    drop_terminated(st.subscribers, dm.source);
  });
  st.rec.status = js::running;
  st.rec.started_at = now_ns();
  st.rec.ended_at = 0;
  st.rec.not_before = 0;
  st.rec.node = ctx->node_name;
  st.rec.reason.clear();
  st.rec.exit_code.reset();
  st.rec.signal.reset();
  st.rec.success.reset();
  st.rec.pgid = 0;
  write(self, write_batch{record_op(st.rec)}, [self] {
    auto& st = self->state;
    job_update up;
    up.job_id = st.rec.id;
    up.status = js::running;
    up.attempt = st.rec.attempt;
    up.after_seq = st.next_seq - 1;
    notify(self, up);
    self->send(st.controller, started_atom::value, st.rec.id);
    start_process(self);
  });
  return {
      [self](process::output& out) { on_output(self, out); },
      [self](exited_atom, int32_t code, int32_t sig) {
        auto& st = self->state;
        st.exited = true;
        st.exit_code = code;
        st.signal = sig;
        // Whatever the job left behind in its group goes with it, so its
        // pipes reach EOF. Processes that left the group (setsid, daemons)
        // and still hold a pipe get a bounded drain, then the same end.
        process::signal_group(static_cast<pid_t>(st.rec.pgid), SIGKILL);
        if (!(st.out_eof && st.err_eof))
          self->delayed_send(self,
                             std::min(st.ctx->cfg.cancel_grace, std::chrono::milliseconds(2000)),
                             kill_atom::value);
        maybe_finish(self);
      },
      [self](cancel_atom) -> ok_atom {
        stop_process(self, job_state::stop_kind::cancelled, self->state.ctx->cfg.cancel_grace);
        return ok_atom::value;
      },
      [self](timeout_atom) {
        log()->warn("job {} timed out after {}s", self->state.rec.id,
                    self->state.spec.timeout_seconds);
        stop_process(self, job_state::stop_kind::timed_out, self->state.ctx->cfg.cancel_grace);
      },
      [self](deferred_atom, uint64_t key) {
        auto i = self->state.deferred.find(key);
        if (i == self->state.deferred.end())
          return;
        auto fn = std::move(i->second);
        self->state.deferred.erase(i);
        fn();
      },
      [self](kill_atom) {
        auto& st = self->state;
        if (!st.exited) {
          process::signal_group(static_cast<pid_t>(st.rec.pgid), SIGKILL);
          return;
        }
        if (st.finishing || (st.out_eof && st.err_eof))
          return;
        // The main process is gone but something still holds its pipes.
        auto n = kill_job_processes(st.rec.id, 0);
        log()->warn("job {}: {} processes outside its process group still held its output; "
                    "killed them",
                    st.rec.id, n);
        if (st.watch)
          st.watch->close();
        st.out_eof = st.err_eof = true;
        maybe_finish(self);
      },
      [self](subscribe_atom, job_subscriber_actor& sub) -> uint64_t {
        self->monitor(sub);
        self->state.subscribers.push_back(std::move(sub));
        return self->state.next_seq - 1;
      },
      [self](shutdown_atom) -> caf::result<ok_atom> {
        auto rp = self->make_response_promise<ok_atom>();
        self->state.shutdown_waiters.push_back(rp);
        stop_process(self, job_state::stop_kind::interrupted,
                     std::min(self->state.ctx->cfg.cancel_grace, std::chrono::milliseconds(5000)));
        if (!self->state.spawned && !self->state.finishing && self->state.exited)
          maybe_finish(self);
        return rp;
      },
  };
}

} // namespace troupe
