#include "actors/logs/log_router.hpp"

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include <caf/actor_system.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/core/log_render.hpp"
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

/// What an op of a routed batch came from: the index its lines join (a job
/// id; empty for none) and the index seq of its first line.
struct op_origin {
  std::string index;
  uint64_t first_index_seq = 0;
};

/// Sends one rendered batch to these subscribers: the same message to each,
/// not a copy per subscriber.
void send_all(self_ptr self, const std::vector<log_subscriber_actor>& subs,
              const caf::message& msg) {
  for (auto& sub : subs)
    sub->enqueue(caf::make_mailbox_element(caf::strong_actor_ptr{self->ctrl()},
                                           caf::make_message_id(), {}, msg),
                 self->context());
}

/// Hands an index's committed batch to its subscribers in the index's seq
/// order: a batch committed before one still missing (a retried write) waits
/// for it, so a job stream never takes a retry for a gap. `msg` is empty when
/// the index had no subscribers as it was rendered.
void deliver_in_order(self_ptr self, const std::string& index, uint64_t first, uint64_t count,
                      caf::message msg) {
  auto& st = self->state;
  if (st.order.size() > 4096 && st.order.count(index) == 0)
    st.order.clear();
  auto& o = st.order[index];
  if (o.next == 0)
    o.next = first; // the first batch seen of this index
  if (first + count <= o.next)
    return; // a batch written again: delivered before
  if (first > o.next) {
    o.held.emplace(first, std::make_pair(count, std::move(msg)));
    if (o.held.size() <= log_router_state::max_held)
      return;
    // The missing batch is not coming: deliver what waits.
    o.next = o.held.begin()->first;
  } else {
    if (!msg.empty())
      send_all(self, st.index_subscribers[index], msg);
    o.next = first + count;
  }
  while (!o.held.empty() && o.held.begin()->first <= o.next) {
    auto node = o.held.extract(o.held.begin());
    auto end = node.key() + node.mapped().first;
    if (end <= o.next)
      continue;
    if (!node.mapped().second.empty())
      send_all(self, st.index_subscribers[index], node.mapped().second);
    o.next = end;
  }
}

/// One committed op: to the stdout sink, and rendered once per shape its
/// live readers need, to them.
void fan_out(self_ptr self, std::string_view op, uint64_t first, uint64_t count,
             const op_origin& origin) {
  auto& st = self->state;
  if (st.out) {
    std::string out;
    uint64_t lines = 0;
    persistence::visit_log_op(op, first,
                              [&](const persistence::stored_line& s, const log_labels& l) {
                                if (l.source == "troupe")
                                  return; // spdlog printed those already
                                out += stdout_line(s, l, st.json_stdout);
                                ++lines;
                              });
    if (lines > 0)
      st.out->offer(std::move(out), lines); // never blocks
  }
  bool for_logs = !st.subscribers.empty();
  bool for_index = false;
  if (!origin.index.empty())
    if (auto i = st.index_subscribers.find(origin.index); i != st.index_subscribers.end())
      for_index = !i->second.empty();
  caf::message msg;
  if (for_logs || for_index)
    msg = caf::make_message(
        render_committed(op, first, origin.index, origin.first_index_seq, for_logs, for_index));
  if (for_logs)
    send_all(self, st.subscribers, msg);
  if (!origin.index.empty())
    deliver_in_order(self, origin.index, origin.first_index_seq, count,
                     for_index ? std::move(msg) : caf::message{});
}

/// Persists log_append ops in one store write and fans out what they hold;
/// `done` gets the first global seq (0 on failure).
void route(self_ptr self, write_batch ops, std::vector<op_origin> origins,
           std::function<void(uint64_t)> done = nullptr) {
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
  // The ops go to the store; their values stay here for the fan-out.
  std::vector<std::string> values;
  values.reserve(ops.size());
  for (auto& op : ops)
    values.push_back(op.value);
  ++st.in_flight;
  self->request(*store, std::chrono::seconds(30), write_atom::value, std::move(ops))
      .then(
          [self, values = std::move(values), origins = std::move(origins),
           done](write_result& res) mutable {
            auto& st = self->state;
            uint64_t first = res.appended.empty() ? 0 : res.appended[0];
            for (size_t i = 0; i < values.size() && 2 * i + 1 < res.appended.size(); ++i) {
              auto seq = res.appended[2 * i];
              auto count = res.appended[2 * i + 1];
              if (count == 0)
                continue;
              st.last_seq = std::max(st.last_seq, seq + count - 1);
              st.lines += count;
              fan_out(self, values[i], seq, count, origins[i]);
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

/// troupe's own lines as store ops: one per run of lines of one logger and
/// request id (their label set).
class own_lines {
public:
  explicit own_lines(log_router_state& st) : st_(st) {}

  void add(const std::string& logger, const std::string& request_id, int64_t ts,
           std::string_view level, std::string_view line) {
    if (!builder_ || labels_.instance != logger || labels_.request_id != request_id) {
      flush();
      labels_ = log_labels{st_.cfg.service, logger, "troupe", request_id, st_.cfg.ns, st_.node};
      builder_.emplace(labels_);
    }
    builder_->add(next_ts(last_ts_of(st_, logger), ts), 1, level, line);
  }

  std::pair<write_batch, std::vector<op_origin>> take() {
    flush();
    std::vector<op_origin> origins(ops_.size()); // troupe's lines join no index
    return {std::move(ops_), std::move(origins)};
  }

private:
  void flush() {
    if (builder_ && builder_->count() > 0)
      ops_.push_back(write_op{write_op::log_append, "logs", {}, builder_->take()});
    builder_.reset();
  }

  log_router_state& st_;
  log_labels labels_;
  std::optional<persistence::log_op_builder> builder_;
  write_batch ops_;
};

} // namespace

std::string stdout_line(const persistence::stored_line& s, const log_labels& l, bool json) {
  if (json) {
    nlohmann::json j{{"timestamp", rfc3339(s.ts_ns)}, {"level", s.level},   {"service", l.service},
                     {"instance", l.instance},        {"source", l.source}, {"message", s.line}};
    if (auto rid = persistence::request_id_of(s, l); !rid.empty())
      j["request_id"] = rid;
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  std::string out = rfc3339(s.ts_ns);
  out += ' ';
  out += s.level;
  out += " [";
  out += l.service;
  out += '/';
  out += l.instance;
  out += "] ";
  out += s.line;
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
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    drop_terminated(st.subscribers, dm.source);
    for (auto i = st.index_subscribers.begin(); i != st.index_subscribers.end();) {
      drop_terminated(i->second, dm.source);
      i = i->second.empty() ? st.index_subscribers.erase(i) : std::next(i);
    }
  });
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
        // A producer sends its first tries in its seq order: the first batch of
        // an index seen here is where its in-order delivery starts.
        if (!in.index.empty() && in.first_seq > 0 && st.order.count(in.index) == 0 &&
            st.order.size() < 4096)
          st.order[in.index].next = in.first_seq;
        write_batch ops{write_op{write_op::log_append, "logs",
                                 in.index.empty() ? std::string{}
                                                  : persistence::log_key(in.index, in.first_seq),
                                 b.take()}};
        auto rp = self->make_response_promise<uint64_t>();
        route(self, std::move(ops), {op_origin{in.index, in.first_seq}},
              [rp](uint64_t seq) mutable { rp.deliver(seq); });
        return rp;
      },
      [self](drain_atom) {
        uint64_t dropped = 0;
        auto lines = logging::take_captured(dropped);
        auto& st = self->state;
        own_lines batch{st};
        if (dropped > 0) {
          st.dropped_own += dropped;
          batch.add("logs", {}, now_ns(), "warn",
                    std::to_string(dropped) +
                        " troupe log lines dropped: the capture buffer was full");
        }
        for (auto& l : lines)
          batch.add(l.logger, l.request_id, l.ts_ns, l.level, l.message);
        auto [ops, origins] = batch.take();
        route(self, std::move(ops), std::move(origins));
      },
      [self](subscribe_atom, log_subscriber_actor& sub) {
        self->monitor(sub);
        self->state.subscribers.push_back(std::move(sub));
      },
      [self](subscribe_atom, std::string& index, log_subscriber_actor& sub) {
        self->monitor(sub);
        self->state.index_subscribers[index].push_back(std::move(sub));
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
