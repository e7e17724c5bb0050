#pragma once

// The map of the system: every typed actor interface and every message type
// that crosses an actor boundary. Read this first.

#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/make_message.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/settings.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

#include "persistence/records.hpp"
#include "runtime/ground/process.hpp"

namespace troupe {

/// The one error enum of troupe; rendered by `to_string(ec)` and registered
/// with the actor system under the category "troupe".
enum class ec : uint8_t {
  none = 0,
  unspecified,
  invalid_argument,
  not_found,
  store_failure,
  schema_too_new,
  unavailable,
  restart_intensity,
  shutting_down,
};

/// Renders an error code as a stable snake_case name.
const char* to_string(ec x);

/// Registers troupe's message types and error category with an actor system
/// config (the node's, a host program's, or a test's).
void add_troupe_types(caf::actor_system_config& cfg);

// -- node-local marking ------------------------------------------------------------

/// Whether a message type must never leave its node because it holds closures
/// or pointers into this process. True only for the types declared with
/// TROUPE_NODE_LOCAL_MESSAGE (the last group of this file).
template <class T> struct is_node_local : std::false_type {};

template <class T> inline constexpr bool is_node_local_v = is_node_local<T>::value;

namespace detail {

template <class Signature> struct signature_is_node_local : std::false_type {};

template <class... In, class... Out>
struct signature_is_node_local<
    caf::typed_mpi<caf::detail::type_list<In...>, caf::output_tuple<Out...>>>
    : std::bool_constant<(is_node_local_v<In> || ...) || (is_node_local_v<Out> || ...)> {};

} // namespace detail

/// Whether an interface takes or answers any node-local message: such an
/// actor can only be reached from its own node.
template <class Handle> struct has_node_local_messages;

template <class... Signatures>
struct has_node_local_messages<caf::typed_actor<Signatures...>>
    : std::bool_constant<(detail::signature_is_node_local<Signatures>::value || ...)> {};

template <class Handle>
inline constexpr bool has_node_local_messages_v = has_node_local_messages<Handle>::value;

// -- persistence records (persistence/records.hpp) as messages -------------------

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, event& x) {
  return f(caf::meta::type_name("event"), x.seq, x.ts_ns, x.type, x.node, x.data);
}

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, write_op& x) {
  return f(caf::meta::type_name("write_op"), x.kind, x.table, x.key, x.value);
}

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, write_result& x) {
  return f(caf::meta::type_name("write_result"), x.appended);
}

/// What a job's live subscribers receive besides its lines (which the log
/// router fans out): a status change; `complete` marks the last update.
struct job_update {
  std::string job_id;
  /// Set when the status changed with this update.
  std::string status;
  int32_t attempt = 0;
  bool complete = false;
  bool success = false;
  /// -1 when the process did not exit normally.
  int32_t exit_code = -1;
  /// The job's lines up to this seq were committed before the update: a
  /// stream shows the update after them.
  uint64_t after_seq = 0;
};

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, job_update& x) {
  return f(caf::meta::type_name("job_update"), x.job_id, x.status, x.attempt, x.complete, x.success,
           x.exit_code, x.after_seq);
}

/// Observations of one metric series gathered by a producer since its last
/// flush. Producers send many in one message (never one per observation).
struct metric_delta {
  /// Internal family key, e.g. `http.request.duration` (actors/metrics/metrics_model.hpp).
  std::string family;
  /// Label values in the order of the family's label names.
  std::vector<std::string> labels;
  /// Counter: the increment. Gauge: the current value. Histogram: unused.
  double value = 0;
  /// Histogram: the observations, as metrics::aggregate::encode().
  std::string observations;
  /// Histogram: observations per bucket of the family's bounds, `+Inf` last;
  /// not cumulative.
  std::vector<uint64_t> buckets;
};

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, metric_delta& x) {
  return f(caf::meta::type_name("metric_delta"), x.family, x.labels, x.value, x.observations,
           x.buckets);
}

using metric_deltas = std::vector<metric_delta>;

/// One rolling window of a series (`1m`, `15m`, `1h`).
struct metric_window_stats {
  std::string window;
  uint64_t count = 0;
  double sum = 0;
  double min = 0;
  double max = 0;
  double avg = 0;
  /// Counters: increments per second; histograms: observations per second.
  double rate = 0;
  /// Span the window covers so far (shorter than the window early on).
  double seconds = 0;
  double p50 = 0;
  double p95 = 0;
  double p99 = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, metric_window_stats& x) {
  return f(caf::meta::type_name("metric_window_stats"), x.window, x.count, x.sum, x.min, x.max,
           x.avg, x.rate, x.seconds, x.p50, x.p95, x.p99);
}

/// What a series knows right now: lifetime totals and its windows.
struct metric_snapshot {
  std::string family;
  std::vector<std::string> labels;
  /// Counter: lifetime total. Gauge: current value. Histogram: lifetime sum.
  double value = 0;
  /// Lifetime number of observations (histograms) or samples (gauges).
  uint64_t count = 0;
  double sum = 0;
  /// Largest value seen since start (NaN if none).
  double max = 0;
  /// Histogram: lifetime observations per bucket (`+Inf` last), not cumulative.
  std::vector<uint64_t> buckets;
  std::vector<metric_window_stats> windows;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, metric_snapshot& x) {
  return f(caf::meta::type_name("metric_snapshot"), x.family, x.labels, x.value, x.count, x.sum,
           x.max, x.buckets, x.windows);
}

using metric_snapshots = std::vector<metric_snapshot>;

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, log_labels& x) {
  return f(caf::meta::type_name("log_labels"), x.service, x.instance, x.source, x.request_id, x.ns,
           x.node);
}

// -- log lines ---------------------------------------------------------------------
//
// One line has three forms on its way: the ingest batch a producer sends
// (log_ingest; a process's pipe read, process::output, is one in the making),
// the committed batch the router fans out to live readers (log_committed),
// and the persisted record in the `logs` table (persistence::stored_line, or
// log_record as an owned copy) that replays and queries read.

/// A producer's batch for the log pipeline: one label set, one read's lines.
struct log_ingest {
  log_labels labels;
  /// Per-instance index the lines join (the job id); empty for none.
  std::string index;
  /// Per-instance seq of the first line; the others follow consecutively.
  uint64_t first_seq = 0;
  int64_t ts_ns = 0;
  /// 1 = stdout, 2 = stderr.
  uint8_t stream = 1;
  /// Packed as in process::output.
  std::string lines;
  uint32_t count = 0;
};

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, log_ingest& x) {
  return f(caf::meta::type_name("log_ingest"), x.labels, x.index, x.first_seq, x.ts_ns, x.stream,
           x.lines, x.count);
}

/// What a component tells about itself: the reply of the `status` protocol
/// (status_api below) that every long-lived component speaks. Rendered to
/// JSON in one place (actors/core/status.hpp).
struct component_status {
  /// The component: its state's name (`job_controller`, `log_router` …).
  std::string name;
  /// False while the component knows it cannot do its work (a child not
  /// running, a sink's breaker open, an exporter failing).
  bool healthy = true;
  /// Its details: counters, states and nested groups, e.g.
  /// `caf::put(x.fields, "redis.status", "ok")`.
  caf::settings fields;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, component_status& x) {
  return f(caf::meta::type_name("component_status"), x.name, x.healthy, x.fields);
}

/// A batch of lines as committed, fanned out by the router once (one message
/// shared by every reader, never copied per reader): one label set,
/// consecutive global seqs and, for an instance's lines (a job's), consecutive
/// seqs of its index. Each line is rendered once per shape its readers need.
struct log_committed {
  log_labels labels;
  /// Global seq of the first line (the `logs` table; GET /logs's ids).
  uint64_t first_seq = 0;
  /// The index the lines joined (the job id), and its seq of the first line
  /// (a job stream's ids); empty and 0 for none.
  std::string index;
  uint64_t first_index_seq = 0;
  /// Per line: its time and level (what GET /logs?follow filters besides
  /// the labels).
  std::vector<int64_t> ts_ns;
  std::vector<std::string> levels;
  /// Per line, GET /logs's JSON; empty unless global readers subscribed.
  std::vector<std::string> log_json;
  /// Per line, the job stream's JSON; empty unless the index's readers
  /// subscribed.
  std::vector<std::string> index_json;

  size_t size() const { return ts_ns.size(); }
};

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, log_committed& x) {
  return f(caf::meta::type_name("log_committed"), x.labels, x.first_seq, x.index, x.first_index_seq,
           x.ts_ns, x.levels, x.log_json, x.index_json);
}

// -- apps (message types) ------------------------------------------------------------

/// What an app actor is to reach (app_manager → app): plain data, so a
/// cluster leader can later send it to the node an app is placed on.
struct app_target {
  std::string name;
  uint32_t revision = 0;
  /// The stored spec (actors/apps/app_spec.hpp to_json).
  std::string spec;
  bool up = false;
  int32_t replicas = 0;
  /// Why it changed (register, up, down, scale, restore …): app.scaled's reason.
  std::string reason;
};

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, app_target& x) {
  return f(caf::meta::type_name("app_target"), x.name, x.revision, x.spec, x.up, x.replicas,
           x.reason);
}

/// One replica as GET /apps/{name}/status shows it.
struct instance_status {
  std::string id;
  std::string node;
  int64_t pid = 0;
  std::vector<uint16_t> ports;
  uint32_t revision = 0;
  /// starting|running|draining|stopping|exited|backoff.
  std::string state = "starting";
  bool ready = false;
  uint32_t restarts = 0;
  int64_t started_at_ns = 0;
  /// The readiness view (or liveness when there is no readiness probe):
  /// unknown|healthy|unhealthy, and "none" without probes.
  std::string health = "none";
  uint32_t consecutive_failures = 0;
  int64_t last_check_ns = 0;
  std::string last_error;
  double cpu_percent = 0;
  uint64_t rss_bytes = 0;
  /// cgroup-v2|cgroup-v1|rlimit|none.
  std::string limits = "none";
  /// Why it is in its state: the last decision about it (an exit's cause,
  /// "OOM-killed: …", a restart's backoff, a drain).
  std::string reason;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, instance_status& x) {
  return f(caf::meta::type_name("instance_status"), x.id, x.node, x.pid, x.ports, x.revision,
           x.state, x.ready, x.restarts, x.started_at_ns, x.health, x.consecutive_failures,
           x.last_check_ns, x.last_error, x.cpu_percent, x.rss_bytes, x.limits, x.reason);
}

/// One app as GET /apps and GET /apps/{name}/status show it.
struct app_status {
  std::string name;
  /// up|down (desired).
  std::string state = "down";
  int32_t desired = 0;
  int32_t ready = 0;
  uint32_t revision = 0;
  std::vector<instance_status> instances;
};

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, app_status& x) {
  return f(caf::meta::type_name("app_status"), x.name, x.state, x.desired, x.ready, x.revision,
           x.instances);
}

using app_statuses = std::vector<app_status>;

/// An instance's change of state, to its app actor.
struct instance_change {
  std::string id;
  std::string state;
  bool ready = false;
  /// Where it listens (its first port; 0 before it has one).
  uint16_t port = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, instance_change& x) {
  return f(caf::meta::type_name("instance_change"), x.id, x.state, x.ready, x.port);
}

/// One instance's CPU and RSS: the latest sample and, per window (1m, 15m,
/// 1h), the samples taken in it (GET /apps/{name}/metrics). An instance
/// sends its app the latest alone (no windows) after every sample.
struct instance_usage {
  std::string id;
  /// Percent of one core between the last two samples.
  double cpu_percent = 0;
  uint64_t rss_bytes = 0;
  /// When the latest sample was taken (Unix ns; 0: none yet).
  int64_t sampled_at_ns = 0;
  std::vector<metric_window_stats> cpu;
  std::vector<metric_window_stats> rss;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, instance_usage& x) {
  return f(caf::meta::type_name("instance_usage"), x.id, x.cpu_percent, x.rss_bytes,
           x.sampled_at_ns, x.cpu, x.rss);
}

/// An app's usage: the sum over its instances now and per window, and each
/// instance's own.
struct app_usage {
  std::string name;
  double cpu_percent = 0;
  uint64_t rss_bytes = 0;
  std::vector<metric_window_stats> cpu;
  std::vector<metric_window_stats> rss;
  std::vector<instance_usage> instances;
};

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, app_usage& x) {
  return f(caf::meta::type_name("app_usage"), x.name, x.cpu_percent, x.rss_bytes, x.cpu, x.rss,
           x.instances);
}

/// One autoscaler evaluation worth recording (actors/autoscale/decide): a
/// change of an app's replicas or one held back, with the rule and reason —
/// the record the app manager stores as it is (GET /apps/{name}/scaling,
/// app.scaled / app.scale_held).
using autoscale_record = persistence::scaling_decision;

// -- traffic (message types) ---------------------------------------------------------

/// An instance the proxy may send requests to, or one it counts requests of.
struct traffic_endpoint {
  std::string instance;
  uint16_t port = 0;
  /// Requests in flight on it now (in app_traffic; 0 in app_endpoints).
  uint32_t in_flight = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, traffic_endpoint& x) {
  return f(caf::meta::type_name("traffic_endpoint"), x.instance, x.port, x.in_flight);
}

/// An app's ready instances and how it is exposed (spec.expose), from the
/// app actor to the proxy on every change; `deleted`: the app is gone.
struct app_endpoints {
  std::string app;
  /// spec.expose is set (else the app is reached at /{app}/… on the proxy).
  bool exposed = false;
  std::string host;
  std::string path_prefix;
  bool strip_prefix = false;
  uint16_t port = 0;
  std::vector<traffic_endpoint> ready;
  bool deleted = false;
  /// Scale to zero (minReplicas 0, mode auto, the app up): a request while
  /// no instance is ready is held this long (0: answered 503 at once) …
  uint32_t activation_timeout_ms = 0;
  /// … and at most this many are held at once (past it: 503).
  uint32_t activation_max_pending = 0;
};

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, app_endpoints& x) {
  return f(caf::meta::type_name("app_endpoints"), x.app, x.exposed, x.host, x.path_prefix,
           x.strip_prefix, x.port, x.ready, x.deleted, x.activation_timeout_ms,
           x.activation_max_pending);
}

/// What the proxy sees of an app now (GET /apps/{name}/metrics; the
/// autoscaler's last activity).
struct app_traffic {
  std::string app;
  /// Client connections whose current request is for the app.
  uint64_t active_connections = 0;
  uint64_t in_flight = 0;
  /// Every instance the proxy routes to or still counts requests of.
  std::vector<traffic_endpoint> instances;
  /// Ejected now by passive health (consecutive connect failures).
  std::vector<std::string> ejected;
  /// Wall-clock ns of the app's last request (0: none since start).
  int64_t last_request_ns = 0;
  /// Requests held while the app activates (scale from zero).
  uint64_t pending = 0;
};

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, app_traffic& x) {
  return f(caf::meta::type_name("app_traffic"), x.app, x.active_connections, x.in_flight,
           x.instances, x.ejected, x.last_request_ns, x.pending);
}

// -- apps: health (message types) -------------------------------------------------

/// One probe's result, from the node's prober to the health checker that
/// asked (actors/apps/probes.hpp).
struct probe_result {
  /// Which probe of the checker it answers; results of older ones are ignored.
  uint64_t seq = 0;
  bool healthy = false;
  /// The probe did not run (prober overloaded): counted neither way.
  bool skipped = false;
  /// Why it failed: "HTTP 503", "timeout after 2s", "connection refused" …
  std::string error;
};

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, probe_result& x) {
  return f(caf::meta::type_name("probe_result"), x.seq, x.healthy, x.skipped, x.error);
}

/// What a health checker knows (an instance's `health` in GET /apps/{name}/status).
struct health_report {
  std::string instance;
  /// readiness or liveness.
  std::string probe;
  /// unknown (thresholds not reached yet), healthy or unhealthy.
  std::string status = "unknown";
  uint32_t consecutive_failures = 0;
  uint32_t consecutive_successes = 0;
  /// Wall-clock ns of the last counted probe (0: none yet).
  int64_t last_check_ns = 0;
  /// The last failure's reason (kept after recovery).
  std::string last_error;
};

template <class Inspector> typename Inspector::result_type inspect(Inspector& f, health_report& x) {
  return f(caf::meta::type_name("health_report"), x.instance, x.probe, x.status,
           x.consecutive_failures, x.consecutive_successes, x.last_check_ns, x.last_error);
}

/// A checker's status changed; sent to its owner.
struct health_transition {
  /// readiness: "ready" | "unready"; liveness: "live" | "live_failed" (restart).
  std::string event;
  /// The checker's view right after the change (status = the new status).
  health_report report;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, health_transition& x) {
  return f(caf::meta::type_name("health_transition"), x.event, x.report);
}

} // namespace troupe

namespace troupe::process {

/// A process's pipe read (runtime/ground/process.hpp) as the job actor gets it.
template <class Inspector> typename Inspector::result_type inspect(Inspector& f, output& x) {
  return f(caf::meta::type_name("process_output"), x.stream, x.ts_ns, x.lines, x.count, x.eof);
}

} // namespace troupe::process

namespace troupe::persistence {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, scaling_decision& x) {
  return f(caf::meta::type_name("scaling_decision"), x.app, x.ts_ns, x.from, x.to, x.reason, x.rule,
           x.metric, x.window, x.observed, x.target, x.proposal);
}

} // namespace troupe::persistence

CAF_BEGIN_TYPE_ID_BLOCK(troupe, caf::first_custom_type_id)

CAF_ADD_TYPE_ID(troupe, (troupe::event))
CAF_ADD_TYPE_ID(troupe, (troupe::write_op))
CAF_ADD_TYPE_ID(troupe, (troupe::write_batch))
CAF_ADD_TYPE_ID(troupe, (troupe::write_result))
CAF_ADD_TYPE_ID(troupe, (troupe::job_update))
CAF_ADD_TYPE_ID(troupe, (troupe::process::output))
CAF_ADD_TYPE_ID(troupe, (troupe::log_committed))
CAF_ADD_TYPE_ID(troupe, (troupe::metric_delta))
CAF_ADD_TYPE_ID(troupe, (troupe::metric_deltas))
CAF_ADD_TYPE_ID(troupe, (troupe::metric_window_stats))
CAF_ADD_TYPE_ID(troupe, (troupe::metric_snapshot))
CAF_ADD_TYPE_ID(troupe, (troupe::metric_snapshots))
CAF_ADD_TYPE_ID(troupe, (troupe::log_labels))
CAF_ADD_TYPE_ID(troupe, (troupe::log_ingest))
CAF_ADD_TYPE_ID(troupe, (troupe::component_status))
CAF_ADD_TYPE_ID(troupe, (troupe::app_target))
CAF_ADD_TYPE_ID(troupe, (troupe::instance_status))
CAF_ADD_TYPE_ID(troupe, (troupe::app_status))
CAF_ADD_TYPE_ID(troupe, (troupe::app_statuses))
CAF_ADD_TYPE_ID(troupe, (troupe::instance_change))
CAF_ADD_TYPE_ID(troupe, (troupe::traffic_endpoint))
CAF_ADD_TYPE_ID(troupe, (troupe::app_endpoints))
CAF_ADD_TYPE_ID(troupe, (troupe::app_traffic))
CAF_ADD_TYPE_ID(troupe, (troupe::instance_usage))
CAF_ADD_TYPE_ID(troupe, (troupe::app_usage))
CAF_ADD_TYPE_ID(troupe, (troupe::persistence::scaling_decision))
CAF_ADD_TYPE_ID(troupe, (troupe::probe_result))
CAF_ADD_TYPE_ID(troupe, (troupe::health_report))
CAF_ADD_TYPE_ID(troupe, (troupe::health_transition))

// CAF already defines get, put, flush, ping, publish, subscribe, ok …
CAF_ADD_ATOM(troupe, troupe, write_atom, "write")
CAF_ADD_ATOM(troupe, troupe, unsub_atom, "unsub")
CAF_ADD_ATOM(troupe, troupe, status_atom, "status")
CAF_ADD_ATOM(troupe, troupe, shutdown_atom, "shutdown")
CAF_ADD_ATOM(troupe, troupe, commit_atom, "commit")
CAF_ADD_ATOM(troupe, troupe, restart_atom, "restart")
CAF_ADD_ATOM(troupe, troupe, submit_atom, "submit")
CAF_ADD_ATOM(troupe, troupe, cancel_atom, "cancel")
CAF_ADD_ATOM(troupe, troupe, exited_atom, "exited")
CAF_ADD_ATOM(troupe, troupe, kill_atom, "kill")
CAF_ADD_ATOM(troupe, troupe, done_atom, "done")
CAF_ADD_ATOM(troupe, troupe, started_atom, "started")
CAF_ADD_ATOM(troupe, troupe, replay_atom, "replay")
CAF_ADD_ATOM(troupe, troupe, deferred_atom, "deferred")
CAF_ADD_ATOM(troupe, troupe, ingest_atom, "ingest")
CAF_ADD_ATOM(troupe, troupe, drain_atom, "drain")
CAF_ADD_ATOM(troupe, troupe, nudge_atom, "nudge")
CAF_ADD_ATOM(troupe, troupe, requeue_atom, "requeue")
CAF_ADD_ATOM(troupe, troupe, sweep_atom, "sweep")
CAF_ADD_ATOM(troupe, troupe, sample_atom, "sample")
CAF_ADD_ATOM(troupe, troupe, tick_atom, "tick")
CAF_ADD_ATOM(troupe, troupe, activity_atom, "activity")
CAF_ADD_ATOM(troupe, troupe, prometheus_atom, "prometheus")
CAF_ADD_ATOM(troupe, troupe, monitoring_atom, "monitoring")
CAF_ADD_ATOM(troupe, troupe, export_atom, "export")
CAF_ADD_ATOM(troupe, troupe, proxied_atom, "proxied")
CAF_ADD_ATOM(troupe, troupe, register_atom, "register")
CAF_ADD_ATOM(troupe, troupe, up_atom, "up")
CAF_ADD_ATOM(troupe, troupe, down_atom, "down")
CAF_ADD_ATOM(troupe, troupe, scale_atom, "scale")
CAF_ADD_ATOM(troupe, troupe, policy_atom, "policy")
CAF_ADD_ATOM(troupe, troupe, place_atom, "place")
CAF_ADD_ATOM(troupe, troupe, in_flight_atom, "in_flight")
CAF_ADD_ATOM(troupe, troupe, recovered_atom, "recovered")
CAF_ADD_ATOM(troupe, troupe, usage_atom, "usage")
CAF_ADD_ATOM(troupe, troupe, ejected_atom, "ejected")
CAF_ADD_ATOM(troupe, troupe, activate_atom, "activate")
CAF_ADD_ATOM(troupe, troupe, count_atom, "count")

CAF_END_TYPE_ID_BLOCK(troupe)

CAF_ERROR_CODE_ENUM(troupe::ec, "troupe")

namespace troupe {

using caf::flush_atom;
using caf::get_atom;
using caf::ok_atom;
using caf::publish_atom;
using caf::subscribe_atom;
using caf::timeout_atom;

// -- status ----------------------------------------------------------------------

/// The status protocol shared by every long-lived component: each interface
/// below that reports on itself is extended with it (`extend_with<status_api>`).
using status_api = caf::typed_actor<
    // The component's health and details (counters, states, sinks).
    caf::replies_to<status_atom>::with<component_status>>;

// -- store ---------------------------------------------------------------------

/// Single LMDB writer. Readers use read-only transactions on the shared
/// environment directly and never go through this actor.
using store_actor = caf::typed_actor<
    // Queues a batch for the next group commit; replies once it is committed.
    caf::replies_to<write_atom, write_batch>::with<write_result>,
    // Answers once every write queued before it is committed (readiness probe).
    caf::replies_to<flush_atom>::with<ok_atom>,
    // Prepares to stop: commits what is queued, then answers.
    caf::replies_to<shutdown_atom>::with<ok_atom>,
    // Internal: commits the queued writes in one transaction (sent to itself).
    caf::reacts_to<commit_atom>>::
    // Status: commits, batches, writes waiting.
    extend_with<status_api>;

// -- event bus -----------------------------------------------------------------

/// Receives events from the bus.
using event_subscriber_actor = caf::typed_actor<
    // Delivers one committed event.
    caf::reacts_to<event>>;

/// Pub/sub of node events; persists through the store before delivering.
using event_bus_actor = caf::typed_actor<
    // Persists the event, delivers it to every subscriber; replies with its seq.
    caf::replies_to<publish_atom, event>::with<uint64_t>,
    // Adds a subscriber; it is dropped automatically when it terminates.
    caf::reacts_to<subscribe_atom, event_subscriber_actor>,
    // Removes a subscriber.
    caf::reacts_to<unsub_atom, event_subscriber_actor>,
    // Answers once every publish accepted before it is delivered or failed.
    caf::replies_to<flush_atom>::with<ok_atom>,
    // Prepares to stop: answers once publishes in flight are done.
    caf::replies_to<shutdown_atom>::with<ok_atom>>;

// -- logs ------------------------------------------------------------------------

/// Receives committed log lines (GET /logs?follow=true, a job's stream).
using log_subscriber_actor = caf::typed_actor<
    // Delivers a batch committed to the `logs` table: all lines in global seq
    // order, or (subscribed to an index) the index's lines in its seq order.
    caf::reacts_to<log_committed>>;

/// A sink that reads the `logs` table at its own pace (Loki).
using log_batcher_actor = caf::typed_actor<
    // Records up to this seq are committed: read on when ready.
    caf::reacts_to<nudge_atom, uint64_t>,
    // Internal: the batch wait or backoff number N elapsed (older ones are stale).
    caf::reacts_to<timeout_atom, uint64_t>,
    // Prepares to stop: answers once no push is in flight.
    caf::replies_to<shutdown_atom>::with<ok_atom>>::
    // Status: cursor, lag, failures, breaker (healthy while it is closed).
    extend_with<status_api>;

/// Fans every line to the sinks: persists it in the `logs` table (the store
/// sink and the outbox of the others), then tells subscribers and batchers.
using log_router_actor = caf::typed_actor<
    // A producer's lines (one message per batch, never per line); answers
    // with the global seq of the first line once they are committed, so
    // producers can pace themselves (credit) instead of filling the router's
    // mailbox.
    caf::replies_to<ingest_atom, log_ingest>::with<uint64_t>,
    // troupe's own log lines are waiting in the logging buffer: take them.
    caf::reacts_to<drain_atom>,
    // Adds a live subscriber of every line; dropped when it terminates.
    caf::reacts_to<subscribe_atom, log_subscriber_actor>,
    // Adds a live subscriber of one index's lines (a job's), in the index's
    // seq order; dropped when it terminates.
    caf::reacts_to<subscribe_atom, std::string, log_subscriber_actor>,
    // Prepares to stop: answers once written batches are committed.
    caf::replies_to<shutdown_atom>::with<ok_atom>>::
    // Status: last seq, lines, drops, subscribers.
    extend_with<status_api>;

// -- jobs ------------------------------------------------------------------------

/// Receives a job's status changes as they are persisted.
using job_subscriber_actor = caf::typed_actor<
    // Delivers a status change of one job.
    caf::reacts_to<job_update>>;

/// Feeds one SSE client of a job's log (GET /jobs/{id}/stream): the job's
/// lines from the log router, its status changes from the job.
using job_stream_actor = job_subscriber_actor::extend_with<log_subscriber_actor>::extend<
    // Internal: continues replaying stored lines once the client caught up.
    caf::reacts_to<replay_atom>>;

/// One running attempt of a job: its process, pipes, timeout and cancel.
using job_actor = caf::typed_actor<
    // Lines read from the process (from the process io thread).
    caf::reacts_to<process::output>,
    // The process ended: exit code (or -1) and terminating signal (or 0).
    caf::reacts_to<exited_atom, int32_t, int32_t>,
    // Cancels: SIGTERM to the process group, SIGKILL after the grace.
    caf::replies_to<cancel_atom>::with<ok_atom>,
    // Internal: the timeout passed.
    caf::reacts_to<timeout_atom>,
    // Internal: the grace after SIGTERM passed.
    caf::reacts_to<kill_atom>,
    // Internal: runs deferred step N (a store write retried while the store
    // restarts under its supervisor, or the launch of the process that ended).
    caf::reacts_to<deferred_atom, uint64_t>,
    // Adds a live subscriber; replies with the highest seq persisted so far.
    caf::replies_to<subscribe_atom, job_subscriber_actor>::with<uint64_t>,
    // Node shutdown: stops the process; the attempt ends as interrupted.
    caf::replies_to<shutdown_atom>::with<ok_atom>>;

/// The job controller's blocking chores (scanning /proc, deleting workspace
/// trees) on a thread of its own, so the controller never stalls a scheduler
/// thread on the file system. Ends when the controller does.
using job_janitor_actor = caf::typed_actor<
    // Kills the processes of these jobs (ids, and the process group of each, 0
    // if none): every process with TROUPE_JOB_ID=<id> in its environment, and
    // the group once one of them proved it the job's. Replies with the number
    // of processes signalled per job.
    caf::replies_to<kill_atom, std::vector<std::string>,
                    std::vector<int64_t>>::with<std::vector<uint64_t>>,
    // Removes these directory trees; replies with how many existed.
    caf::replies_to<caf::delete_atom, std::vector<std::string>>::with<uint64_t>>;

/// Owns the queue: priority then FIFO, concurrency slots, retries, recovery,
/// retention.
using job_controller_actor = caf::typed_actor<
    // Stores a new job (record JSON) as queued; replies with its id once committed.
    caf::replies_to<submit_atom, std::string>::with<std::string>,
    // Cancels a queued or running job; replies with the resulting status.
    caf::replies_to<cancel_atom, std::string>::with<std::string>,
    // Subscribes to a job's live updates (held until a queued job starts);
    // replies with the highest seq persisted so far once registered.
    caf::replies_to<subscribe_atom, std::string, job_subscriber_actor>::with<uint64_t>,
    // From a job actor: its process started and `running` is committed.
    caf::reacts_to<started_atom, std::string>,
    // From a job actor: its attempt ended with this status; `true` if it was
    // re-queued for a retry (its subscribers are handed back).
    caf::reacts_to<done_atom, std::string, std::string, bool, std::vector<job_subscriber_actor>>,
    // Internal: a retried job's backoff passed.
    caf::reacts_to<requeue_atom, std::string>,
    // Internal: the periodic workspace/retention sweep.
    caf::reacts_to<sweep_atom>,
    // Internal: the next bounded step of a sweep, from this job id on.
    caf::reacts_to<sweep_atom, std::string>,
    // How many queued jobs carry the label NAME=VALUE (an autoscaler's
    // queue.jobs input).
    caf::replies_to<count_atom, std::string>::with<uint64_t>,
    // Node shutdown: stops running jobs and answers once they are recorded.
    caf::replies_to<shutdown_atom>::with<ok_atom>>::
    // Status: queue depth, slots and job counts by state (healthy once
    // recovered and while not shutting down).
    extend_with<status_api>;

// -- metrics -----------------------------------------------------------------------

/// One series: a ring of sub-window buckets (actors/metrics/window_ring.hpp).
using metric_window_actor = caf::typed_actor<
    // Merges a producer's observations (histogram), increment (counter) or
    // current value (gauge).
    caf::reacts_to<metric_delta>,
    // Gauges: records the current value as one sample now.
    caf::reacts_to<sample_atom>,
    // Lifetime totals and the 1m/15m/1h windows.
    caf::replies_to<get_atom>::with<metric_snapshot>>;

/// Owns the node's series (one metric_window actor each) and renders them.
using metrics_actor = caf::typed_actor<
    // Producers' observations, routed to their series (created on first sight).
    caf::reacts_to<metric_deltas>,
    // Something happened (request, job, instance): last activity = now.
    caf::reacts_to<activity_atom>,
    // Internal: drains the pull sources, samples gauges, beats the heartbeat.
    caf::reacts_to<tick_atom>,
    // A proxied upstream's series (proxy mode): replaces what came from it before.
    caf::reacts_to<proxied_atom, std::string, metric_snapshots>,
    // Every series, local and proxied.
    caf::replies_to<get_atom>::with<metric_snapshots>,
    // Prometheus text exposition 0.0.4 (cached for metrics.prometheus.scrape_ttl).
    caf::replies_to<prometheus_atom>::with<std::string>,
    // The /monitoring/system JSON document.
    caf::replies_to<monitoring_atom>::with<std::string>,
    // Node shutdown: nothing to flush (series live in memory); answers at once.
    caf::replies_to<shutdown_atom>::with<ok_atom>>;

/// Ships the registry's series out on a schedule (Pushgateway, Redis) and
/// pulls upstreams (proxy mode). Detached: its I/O blocks.
using metrics_exporter_actor = caf::typed_actor<
    // Internal: the export interval passed.
    caf::reacts_to<tick_atom>,
    // Runs one export cycle now; replies with a JSON summary (errors included).
    caf::replies_to<export_atom>::with<std::string>,
    // Clean shutdown: deletes the Pushgateway group, then answers.
    caf::replies_to<shutdown_atom>::with<ok_atom>>::
    // Status: each exporter's state (Redis connection, last push …); healthy
    // while none is failing.
    extend_with<status_api>;

// -- apps --------------------------------------------------------------------------

/// One replica of an app: its process (own process group, port, env), its
/// output into the log pipeline, restarts with backoff, drains.
using instance_actor = caf::typed_actor<
    // Lines read from the process (from the process io thread).
    caf::reacts_to<process::output>,
    // The process ended: exit code (or -1) and terminating signal (or 0).
    caf::reacts_to<exited_atom, int32_t, int32_t>,
    // Scale-in, down or replace: not ready, wait for in-flight requests up to
    // drainSeconds, SIGTERM, SIGKILL after gracePeriodSeconds; then it ends.
    caf::reacts_to<drain_atom>,
    // Internal: the grace after SIGTERM number N passed.
    caf::reacts_to<kill_atom, uint64_t>,
    // Internal: the restart backoff number N passed.
    caf::reacts_to<restart_atom, uint64_t>,
    // Internal: runs deferred step N (a launch result).
    caf::reacts_to<deferred_atom, uint64_t>,
    // Internal: the drain's next in-flight check.
    caf::reacts_to<tick_atom>,
    // A health checker's status changed: readiness gates `ready`, a
    // liveness failure restarts the process.
    caf::reacts_to<health_transition>,
    // Its state, health and usage.
    caf::replies_to<get_atom>::with<instance_status>,
    // Internal: time to sample CPU and RSS (apps.sample_interval).
    caf::reacts_to<sample_atom>,
    // Its CPU and RSS now and per window.
    caf::replies_to<usage_atom>::with<instance_usage>,
    // The proxy ejected it (consecutive connect failures): probe readiness now.
    caf::reacts_to<ejected_atom>,
    // Node shutdown: SIGTERM now (no drain), SIGKILL after the grace; answers
    // once the process is gone.
    caf::replies_to<shutdown_atom>::with<ok_atom>>;

/// One app on this node: reconciles its instances toward the target
/// (count and revision), replacing them one at a time on a new revision.
using app_actor = caf::typed_actor<
    // The desired state (from the app manager).
    caf::reacts_to<app_target>,
    // An instance's state changed.
    caf::reacts_to<instance_change>,
    // Internal: reconcile again (a crashed instance actor's restart).
    caf::reacts_to<tick_atom>,
    // Its status with every instance's.
    caf::replies_to<get_atom>::with<app_status>,
    // An instance's latest CPU and RSS sample (no windows).
    caf::reacts_to<instance_usage>,
    // Internal: time to add the instances' sum to the app's windows.
    caf::reacts_to<sample_atom>,
    // Its usage (sum and windows) with every instance's.
    caf::replies_to<usage_atom>::with<app_usage>,
    // The proxy ejected instance N: its readiness is probed now.
    caf::reacts_to<ejected_atom, std::string>,
    // Node shutdown: stops every instance, then answers.
    caf::replies_to<shutdown_atom>::with<ok_atom>>;

/// The built-in proxy's actor side (actors/traffic): learns every app's
/// ready endpoints, answers drains, turns the data plane's counts into
/// gauges. Not registered when the proxy is off (a drain then waits for
/// nothing).
using traffic_actor = caf::typed_actor<
    // An app's ready instances and expose rule (from its app actor).
    caf::reacts_to<app_endpoints>,
    // Requests in flight to instance (app, instance id) now, plus one while
    // the proxy may still route new requests to it.
    caf::replies_to<in_flight_atom, std::string, std::string>::with<uint32_t>,
    // What the proxy sees of an app now.
    caf::replies_to<get_atom, std::string>::with<app_traffic>,
    // The data plane ejected instance (app, id): its app is told.
    caf::reacts_to<ejected_atom, std::string, std::string>,
    // The data plane holds a request for an app with no ready instance
    // (scale from zero): the app manager is told to activate it.
    caf::reacts_to<activate_atom, std::string>,
    // Internal: time to sample the gauges.
    caf::reacts_to<tick_atom>>::
    // Status: listeners, apps, connections.
    extend_with<status_api>;

/// One app's autoscaler (actors/autoscale, `scaling.policy.mode: auto`):
/// each evaluationSeconds it reads the app's windows and samples, decides,
/// and sends the decision to the app manager.
using autoscaler_actor = caf::typed_actor<
    // Internal: time to evaluate.
    caf::reacts_to<tick_atom>,
    // Requests wait for the app at zero: evaluate now (not at the next tick).
    caf::reacts_to<activate_atom>>::
    // Status: evaluations, the last decision.
    extend_with<status_api>;

/// The node's apps: registry, desired state, records, restore after restart.
using app_manager_actor = caf::typed_actor<
    // Registers or updates an app (its stored spec JSON); replies with the
    // revision (1: a new app). An update of an app that is up replaces its
    // instances one at a time.
    caf::replies_to<register_atom, std::string>::with<uint32_t>,
    // Desired state up / down (down drains every instance).
    caf::replies_to<up_atom, std::string>::with<ok_atom>,
    caf::replies_to<down_atom, std::string>::with<ok_atom>,
    // Desired replicas; outside [minReplicas, maxReplicas] is invalid_argument
    // naming `replicas`. The reason is recorded with the decision.
    caf::replies_to<scale_atom, std::string, int32_t, std::string>::with<ok_atom>,
    // The autoscaler's decision: a change is applied (unless the replicas
    // moved meanwhile) and recorded, a hold recorded; both published.
    caf::replies_to<scale_atom, autoscale_record>::with<ok_atom>,
    // Stores a new spec with the same revision (a new scaling policy): no
    // instance is replaced.
    caf::replies_to<policy_atom, std::string, std::string>::with<ok_atom>,
    // Downs and removes an app (its logs stay until retention).
    caf::replies_to<caf::delete_atom, std::string>::with<ok_atom>,
    // Every app (without instances); one app with its instances.
    caf::replies_to<get_atom>::with<app_statuses>,
    caf::replies_to<get_atom, std::string>::with<app_status>,
    // One app's CPU and RSS, its instances' too (nothing while it is down).
    caf::replies_to<usage_atom, std::string>::with<app_usage>,
    // Placement: the nodes for `count` new instances of an app (this node
    // for now; a cluster leader answers later).
    caf::replies_to<place_atom, std::string, uint32_t>::with<std::vector<std::string>>,
    // Internal: the orphans of the previous run are gone; apps start.
    caf::reacts_to<recovered_atom>,
    // The proxy ejected instance (app, id): its readiness is probed now.
    caf::reacts_to<ejected_atom, std::string, std::string>,
    // The proxy holds requests for the app (at zero): its autoscaler
    // evaluates now.
    caf::reacts_to<activate_atom, std::string>,
    // Node shutdown: stops every app's instances, then answers.
    caf::replies_to<shutdown_atom>::with<ok_atom>>::
    // Status: apps, instances, recovery.
    extend_with<status_api>;
// -- apps: health ------------------------------------------------------------------

/// Whoever owns a health checker (an instance): told of each status change.
using health_owner_actor = caf::typed_actor<
    // The checker's status changed (ready/unready, live/live_failed).
    caf::reacts_to<health_transition>>;

/// Probes one instance for one role (readiness or liveness) on its schedule
/// (actors/apps/health_checker.hpp).
using health_checker_actor = caf::typed_actor<
    // A probe's result (from the prober's thread).
    caf::reacts_to<probe_result>,
    // Internal: the next probe is due.
    caf::reacts_to<tick_atom>,
    // The proxy saw connect failures: one extra probe now (the schedule stays).
    caf::reacts_to<ejected_atom>,
    // Status, consecutive failures, last check and last error.
    caf::replies_to<get_atom>::with<health_report>>;

// -- node supervisor -------------------------------------------------------------

/// Starts the node's long-lived children, restarts crashed ones with backoff,
/// and escalates (quits with ec::restart_intensity) when they crash too often.
using node_supervisor_actor = caf::typed_actor<
    // Stops the children in reverse start order, then quits normally.
    caf::replies_to<shutdown_atom>::with<ok_atom>,
    // Internal: starts child number N again once its backoff has passed.
    caf::reacts_to<restart_atom, uint64_t>>::
    // Status: children and restart counts (healthy while all run). Answered
    // once every child has started and is registered.
    extend_with<status_api>;

// -- node-local messages -----------------------------------------------------------
//
// The messages of this group hold closures or pointers into this process and
// must never leave the node: each is declared with TROUPE_NODE_LOCAL_MESSAGE
// (below the namespace), which marks it (is_node_local_v) and lets CAF pass it
// without serializing it. Only the interfaces of this group take them; every
// interface above carries plain, inspectable data only (checked at the end of
// the file), so the cluster may send their messages to other nodes.
// (job_janitor_actor's pids and paths are plain data but mean something only
// on their own node: it is never registered or published.)

struct bridge_task;

/// One per io thread; turns HTTP requests into typed requests to actors.
using http_bridge_actor = caf::typed_actor<
    // Runs the task; the task answers its HTTP exchange itself.
    caf::reacts_to<bridge_task>>;

/// Work that an HTTP session hands to a bridge actor: it runs in the bridge's
/// context so it can issue typed requests and answer the exchange from their
/// continuations. Node-local: holds a closure (and the session through it).
struct bridge_task {
  std::function<void(http_bridge_actor::pointer)> run;
  /// X-Request-ID of the HTTP call: bound to the bridge thread while the
  /// task runs, so its log lines carry it.
  std::string request_id;
};

} // namespace troupe

/// Declares `type` a node-local message: marks it and allows CAF to pass it
/// unserialized. At global scope, after the type's namespace.
#define TROUPE_NODE_LOCAL_MESSAGE(type)                                                            \
  template <> struct troupe::is_node_local<type> : std::true_type {};                              \
  CAF_ALLOW_UNSAFE_MESSAGE_TYPE(type)

TROUPE_NODE_LOCAL_MESSAGE(troupe::bridge_task)

static_assert(troupe::has_node_local_messages_v<troupe::http_bridge_actor>,
              "the bridge takes closures: it stays on its node");

// The interfaces the cluster may address on other nodes carry no node-local
// message; adding one to them fails here instead of on the network.
static_assert(!troupe::has_node_local_messages_v<troupe::store_actor> &&
                  !troupe::has_node_local_messages_v<troupe::event_bus_actor> &&
                  !troupe::has_node_local_messages_v<troupe::log_router_actor> &&
                  !troupe::has_node_local_messages_v<troupe::log_batcher_actor> &&
                  !troupe::has_node_local_messages_v<troupe::job_controller_actor> &&
                  !troupe::has_node_local_messages_v<troupe::job_actor> &&
                  !troupe::has_node_local_messages_v<troupe::metrics_actor> &&
                  !troupe::has_node_local_messages_v<troupe::metrics_exporter_actor> &&
                  !troupe::has_node_local_messages_v<troupe::node_supervisor_actor> &&
                  !troupe::has_node_local_messages_v<troupe::instance_actor> &&
                  !troupe::has_node_local_messages_v<troupe::app_actor> &&
                  !troupe::has_node_local_messages_v<troupe::app_manager_actor> &&
                  !troupe::has_node_local_messages_v<troupe::traffic_actor> &&
                  !troupe::has_node_local_messages_v<troupe::health_checker_actor> &&
                  !troupe::has_node_local_messages_v<troupe::health_owner_actor>,
              "a network-capable interface takes a node-local message");
