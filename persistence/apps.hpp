#pragma once

// App records in LMDB: `apps` holds each app's stored spec with its revision
// and desired state (key: name); `app_instances` one record per replica
// (key: <app>/<instance id>), which the app actor reconciles against its
// processes and a cluster leader will later write for placement;
// `app_scaling` the history of replica decisions (key: app name, NUL, seq).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "persistence/records.hpp"

namespace troupe::persistence {

class lmdb_env;

/// Desired states of an app.
namespace app_state {
inline constexpr const char* up = "up";
inline constexpr const char* down = "down";
} // namespace app_state

/// What is stored about an app.
struct app_record {
  std::string name;
  /// 1 on the first registration, +1 on every later one.
  uint32_t revision = 1;
  /// The stored spec (actors/apps/app_spec.hpp to_json: env values in it,
  /// so it never leaves troupe as it is).
  std::string spec;
  /// up or down.
  std::string desired_state = app_state::down;
  int32_t desired_replicas = 1;
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

/// What is stored about one replica; `state` as GET /apps/{name}/status
/// shows it (starting|running|draining|stopping|exited|backoff|stopped).
struct instance_record {
  std::string id;
  std::string app;
  /// The spec revision it runs.
  uint32_t revision = 0;
  /// The node it is placed on.
  std::string node;
  std::vector<uint16_t> ports;
  /// Process group of the running process (0 if none).
  int64_t pgid = 0;
  std::string state = "starting";
  uint32_t restarts = 0;
  int64_t started_at = 0;
  int64_t ended_at = 0;
  std::optional<int> exit_code;
  std::optional<int> signal;
  /// Why it is in its state (the last decision about it).
  std::string reason;
};

std::string encode(const app_record& r);
app_record decode_app(std::string_view value);
std::string encode(const instance_record& r);
instance_record decode_instance(std::string_view value);
std::string encode(const scaling_decision& d);
scaling_decision decode_scaling(std::string_view value);

/// The ops that store or remove a record.
write_op put_app_op(const app_record& r);
write_op erase_app_op(const std::string& name);
write_op put_instance_op(const instance_record& r);
write_op erase_instance_op(const std::string& app, const std::string& id);
/// Appended under the app's key space (app, NUL, ts, from->to).
write_op scaling_op(const scaling_decision& d);

std::optional<app_record> get_app(const lmdb_env& env, const std::string& name);

/// Every app, by name.
std::vector<app_record> list_apps(const lmdb_env& env);

/// An app's instance records (by id).
std::vector<instance_record> list_instances(const lmdb_env& env, const std::string& app);

/// Every instance record of every app (recovery).
std::vector<instance_record> list_all_instances(const lmdb_env& env);

/// A page of an app's scaling decisions, newest first: at most `limit`,
/// older than `before` (a cursor from an earlier page; empty: from the
/// newest). `next` is the cursor of the page after it (empty: none).
std::vector<scaling_decision> scaling_page(const lmdb_env& env, const std::string& app,
                                           const std::string& before, size_t limit,
                                           std::string& next);

/// The op that erases an app's scaling decisions older than its newest
/// `keep` (nullopt: it holds no more than that). Written with each new
/// decision (keep = bound - 1), it bounds the history.
std::optional<write_op> prune_scaling_op(const lmdb_env& env, const std::string& app, size_t keep);

/// Ops removing everything stored about an app but its logs (DELETE).
write_batch purge_app_ops(const lmdb_env& env, const std::string& app);

} // namespace troupe::persistence
