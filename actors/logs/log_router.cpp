#include "actors/logs/log_router.hpp"

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/names.hpp"
#include "actors/logs/loki.hpp"
#include "persistence/jobs.hpp"
#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/clock.hpp"
#include "runtime/ground/log_level.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

using self_ptr = log_router_actor::stateful_pointer<log_router_state>;

void finished_one(self_ptr self) {
  auto& st = self->state;
  if (--st.in_flight == 0) {
    for (auto& rp : st.shutdown_waiters)
      rp.deliver(ok_atom::value);
    st.shutdown_waiters.clear();
  }
}

/// Persists log_append ops in one store write and forwards what they hold;
/// `done` gets the first global seq (0 on failure).
void route(self_ptr self, write_batch ops, std::function<void(uint64_t)> done = nullptr) {
  auto& st = self->state;
  if (ops.empty()) {
    if (done)
      done(st.last_seq);
    return;
  }
  auto store = lookup(self->system(), names::store);
  if (!store) {
    // The store restarts under its supervisor; job producers retry, troupe's
    // lines still reached stdout.
    logging::get("logs")->warn("store unavailable: a log batch was not routed");
    if (done)
      done(0);
    return;
  }
  // Only live readers need the lines back as records: keep a copy for them.
  std::shared_ptr<write_batch> copy;
  if (!st.subscribers.empty() || st.out)
    copy = std::make_shared<write_batch>(ops);
  ++st.in_flight;
  self->request(*store, std::chrono::seconds(30), write_atom::value, std::move(ops))
      .then(
          [self, copy, done](write_result& res) mutable {
            auto& st = self->state;
            uint64_t first = res.appended.empty() ? 0 : res.appended[0];
            for (size_t i = 0; i + 1 < res.appended.size(); i += 2) {
              st.last_seq = std::max(st.last_seq, res.appended[i] + res.appended[i + 1] - 1);
              st.lines += res.appended[i + 1];
            }
            if (copy) {
              log_batch batch;
              for (size_t i = 0; i < copy->size() && 2 * i < res.appended.size(); ++i) {
                auto part = persistence::decode_log_op((*copy)[i].value, res.appended[2 * i]);
                batch.insert(batch.end(), std::make_move_iterator(part.begin()),
                             std::make_move_iterator(part.end()));
              }
              if (st.out) {
                std::string out;
                uint64_t lines = 0;
                for (auto& r : batch)
                  if (r.source != "troupe") { // spdlog printed those already
                    out += stdout_line(r, st.json_stdout);
                    ++lines;
                  }
                if (lines > 0)
                  st.out->offer(std::move(out), lines); // never blocks
              }
              for (auto& sub : st.subscribers)
                self->send(sub, batch);
            }
            if (auto loki = lookup(self->system(), names::loki))
              self->send(*loki, nudge_atom::value, st.last_seq);
            if (done)
              done(first);
            finished_one(self);
          },
          [self, done](caf::error& err) {
            logging::get("logs")->error("log batch not stored: {}", caf::to_string(err));
            if (done)
              done(0);
            finished_one(self);
          });
}

/// The latest timestamp given to a line of `instance` (looked up once per
/// batch); the next line gets `max(its time, this + 1)`.
int64_t& last_ts_of(log_router_state& st, const std::string& instance) {
  if (st.last_ts.size() > 4096 && st.last_ts.count(instance) == 0)
    st.last_ts.clear();
  return st.last_ts[instance];
}

int64_t next_ts(int64_t& last, int64_t ts) {
  last = std::max(ts, last + 1);
  return last;
}

/// One op per run of records with equal labels (troupe's own lines).
write_batch ops_for(const log_batch& records) {
  write_batch ops;
  size_t i = 0;
  while (i < records.size()) {
    auto& r0 = records[i];
    log_labels l{r0.service, r0.instance, r0.source, r0.request_id, r0.ns, r0.node};
    persistence::log_op_builder b{l};
    for (;
         i < records.size() && records[i].service == r0.service && records[i].source == r0.source &&
         records[i].instance == r0.instance && records[i].request_id == r0.request_id;
         ++i)
      b.add(records[i].ts_ns, records[i].stream, records[i].level, records[i].line);
    ops.push_back(write_op{write_op::log_append, "logs", {}, b.take()});
  }
  return ops;
}

} // namespace

std::string stdout_line(const log_record& r, bool json) {
  if (json) {
    nlohmann::json j{{"timestamp", rfc3339(r.ts_ns)}, {"level", r.level},   {"service", r.service},
                     {"instance", r.instance},        {"source", r.source}, {"message", r.line}};
    if (!r.request_id.empty())
      j["request_id"] = r.request_id;
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  std::string out = rfc3339(r.ts_ns);
  out += ' ';
  out += r.level;
  out += " [";
  out += r.service;
  out += '/';
  out += r.instance;
  out += "] ";
  out += r.line;
  out += '\n';
  return out;
}

// -- stdout sink ------------------------------------------------------------------

struct stdout_writer::shared {
  write_fn write;
  size_t max_bytes;
  mutable std::mutex mtx;
  mutable std::condition_variable cv;
  std::deque<std::string> queue;
  /// Bytes queued or being written.
  size_t bytes = 0;
  bool stopping = false;
  uint64_t dropped = 0;
  /// Dropped lines not yet reported.
  uint64_t unreported = 0;

  void run() {
    std::unique_lock<std::mutex> guard{mtx};
    for (;;) {
      cv.wait(guard, [this] { return stopping || !queue.empty(); });
      if (queue.empty())
        return; // stopping, all written
      auto text = std::move(queue.front());
      queue.pop_front();
      auto missed = std::exchange(unreported, 0);
      guard.unlock();
      // Only this thread ever waits on stdout.
      write(text);
      if (missed > 0)
        logging::get("logs")->warn("stdout sink: {} job lines were not printed on stdout, "
                                   "which did not keep up (they are in the store)",
                                   missed);
      guard.lock();
      bytes -= text.size();
      cv.notify_all();
    }
  }
};

stdout_writer::stdout_writer(size_t max_bytes, write_fn write) : s_(std::make_shared<shared>()) {
  s_->max_bytes = max_bytes;
  s_->write = write ? std::move(write) : [](const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  };
  // Detached, holding the shared state: a write stuck on a full pipe must
  // not hold up the router's exit.
  std::thread{[s = s_] { s->run(); }}.detach();
}

stdout_writer::~stdout_writer() {
  std::lock_guard<std::mutex> guard{s_->mtx};
  s_->stopping = true;
  s_->cv.notify_all();
}

bool stdout_writer::offer(std::string text, uint64_t lines) {
  std::lock_guard<std::mutex> guard{s_->mtx};
  if (s_->bytes + text.size() > s_->max_bytes) {
    s_->dropped += lines;
    s_->unreported += lines;
    return false;
  }
  s_->bytes += text.size();
  s_->queue.push_back(std::move(text));
  s_->cv.notify_all();
  return true;
}

uint64_t stdout_writer::dropped_lines() const {
  std::lock_guard<std::mutex> guard{s_->mtx};
  return s_->dropped;
}

bool stdout_writer::wait_idle(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> guard{s_->mtx};
  return s_->cv.wait_for(guard, timeout, [this] { return s_->bytes == 0; });
}

log_router_actor::behavior_type log_router(self_ptr self, logs_config cfg, std::string node,
                                           bool json_stdout) {
  std::shared_ptr<stdout_writer> out;
  if (cfg.stdout_sink)
    out = std::make_shared<stdout_writer>(stdout_queue_bytes);
  return log_router_with(self, std::move(cfg), std::move(node), json_stdout, std::move(out));
}

log_router_actor::behavior_type log_router_with(self_ptr self, logs_config cfg, std::string node,
                                                bool json_stdout,
                                                std::shared_ptr<stdout_writer> out) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.node = std::move(node);
  st.json_stdout = json_stdout;
  st.out = std::move(out);
  self->set_down_handler(
      [self](caf::down_msg& dm) { drop_terminated(self->state.subscribers, dm.source); });
  // Lines captured while no router ran (a restart) are waiting: the capture
  // only notifies when its buffer turns non-empty.
  self->send(self, drain_atom::value);
  return {
      [self](ingest_atom, log_ingest& in) -> caf::result<uint64_t> {
        auto& st = self->state;
        if (in.labels.ns.empty())
          in.labels.ns = st.cfg.ns;
        if (in.labels.node.empty())
          in.labels.node = st.node;
        persistence::log_op_builder b{in.labels};
        auto& last = last_ts_of(st, in.labels.instance);
        troupe::for_each_packed(in.lines, [&](std::string_view line) {
          b.add(
              next_ts(last, in.ts_ns), in.stream,
              troupe::detect_level(line, in.stream == 2, st.cfg.stdout_level, st.cfg.stderr_level),
              line);
        });
        write_batch ops{write_op{write_op::log_append, "logs",
                                 in.index.empty() ? std::string{}
                                                  : persistence::log_key(in.index, in.first_seq),
                                 b.take()}};
        auto rp = self->make_response_promise<uint64_t>();
        route(self, std::move(ops), [rp](uint64_t seq) mutable { rp.deliver(seq); });
        return rp;
      },
      [self](drain_atom) {
        uint64_t dropped = 0;
        auto lines = logging::take_captured(dropped);
        auto& st = self->state;
        log_batch batch;
        batch.reserve(lines.size() + 1);
        if (dropped > 0) {
          st.dropped_own += dropped;
          log_record r;
          r.ts_ns = now_ns();
          r.line =
              std::to_string(dropped) + " troupe log lines dropped: the capture buffer was full";
          r.level = "warn";
          r.service = st.cfg.service;
          r.instance = "logs";
          r.source = "troupe";
          batch.push_back(std::move(r));
        }
        for (auto& l : lines) {
          log_record r;
          r.ts_ns = l.ts_ns;
          r.line = std::move(l.message);
          r.level = std::move(l.level);
          r.service = st.cfg.service;
          r.instance = std::move(l.logger);
          r.source = "troupe";
          r.request_id = std::move(l.request_id);
          batch.push_back(std::move(r));
        }
        for (auto& r : batch) {
          r.ns = st.cfg.ns;
          r.node = st.node;
          r.ts_ns = next_ts(last_ts_of(st, r.instance), r.ts_ns);
        }
        route(self, ops_for(batch));
      },
      [self](subscribe_atom, log_subscriber_actor& sub) {
        self->monitor(sub);
        self->state.subscribers.push_back(std::move(sub));
      },
      [self](status_atom) {
        auto& st = self->state;
        component_status x{log_router_state::name, true, {}};
        caf::put(x.fields, "last_seq", st.last_seq);
        caf::put(x.fields, "lines", st.lines);
        caf::put(x.fields, "own_lines_dropped", st.dropped_own);
        caf::put(x.fields, "stdout_lines_dropped", st.out ? st.out->dropped_lines() : 0);
        caf::put(x.fields, "subscribers", st.subscribers.size());
        return x;
      },
      [self](shutdown_atom) -> caf::result<ok_atom> {
        if (self->state.in_flight == 0)
          return ok_atom::value;
        auto rp = self->make_response_promise<ok_atom>();
        self->state.shutdown_waiters.push_back(rp);
        return rp;
      },
  };
}

} // namespace troupe
