#include "persistence/apps.hpp"

#include <algorithm>
#include <atomic>

#include <nlohmann/json.hpp>

#include "persistence/lmdb_env.hpp"

namespace troupe::persistence {

using nlohmann::json;

namespace {

constexpr const char* apps_table = "apps";
constexpr const char* instances_table = "app_instances";
constexpr const char* scaling_table = "app_scaling";

std::string instance_key(const std::string& app, const std::string& id) {
  return app + '/' + id;
}

/// Scaling keys: the app, NUL (sorts before any name character), then a
/// zero-padded timestamp and a per-call counter so keys of one app stay in
/// time order and never collide.
std::string scaling_key(const std::string& app, int64_t ts_ns) {
  static std::atomic<uint32_t> counter{0};
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%020lld-%08x", static_cast<long long>(ts_ns), ++counter);
  return app + '\0' + buf;
}

template <class T> std::optional<int> opt_int(const json& j, const char* key) {
  if (j.contains(key) && j[key].is_number_integer())
    return j[key].get<int>();
  return std::nullopt;
}

} // namespace

std::string encode(const app_record& r) {
  return json{{"name", r.name},
              {"revision", r.revision},
              {"spec", r.spec},
              {"desired_state", r.desired_state},
              {"desired_replicas", r.desired_replicas},
              {"created_at", r.created_at},
              {"updated_at", r.updated_at}}
      .dump();
}

app_record decode_app(std::string_view value) {
  auto j = json::parse(value);
  app_record r;
  r.name = j.at("name").get<std::string>();
  r.revision = j.value("revision", 1u);
  r.spec = j.value("spec", "{}");
  r.desired_state = j.value("desired_state", app_state::down);
  r.desired_replicas = j.value("desired_replicas", 1);
  r.created_at = j.value("created_at", int64_t{0});
  r.updated_at = j.value("updated_at", int64_t{0});
  return r;
}

std::string encode(const instance_record& r) {
  json j{{"id", r.id},
         {"app", r.app},
         {"revision", r.revision},
         {"node", r.node},
         {"ports", r.ports},
         {"pgid", r.pgid},
         {"state", r.state},
         {"restarts", r.restarts},
         {"started_at", r.started_at},
         {"ended_at", r.ended_at},
         {"reason", r.reason}};
  j["exit_code"] = r.exit_code ? json(*r.exit_code) : json(nullptr);
  j["signal"] = r.signal ? json(*r.signal) : json(nullptr);
  return j.dump();
}

instance_record decode_instance(std::string_view value) {
  auto j = json::parse(value);
  instance_record r;
  r.id = j.at("id").get<std::string>();
  r.app = j.at("app").get<std::string>();
  r.revision = j.value("revision", 0u);
  r.node = j.value("node", "");
  r.ports = j.value("ports", std::vector<uint16_t>{});
  r.pgid = j.value("pgid", int64_t{0});
  r.state = j.value("state", "exited");
  r.restarts = j.value("restarts", 0u);
  r.started_at = j.value("started_at", int64_t{0});
  r.ended_at = j.value("ended_at", int64_t{0});
  r.reason = j.value("reason", "");
  r.exit_code = opt_int<int>(j, "exit_code");
  r.signal = opt_int<int>(j, "signal");
  return r;
}

std::string encode(const scaling_decision& d) {
  json j{{"app", d.app}, {"ts", d.ts_ns}, {"from", d.from}, {"to", d.to}, {"reason", d.reason}};
  if (!d.rule.empty()) {
    j["rule"] = d.rule;
    j["metric"] = d.metric;
    j["window"] = d.window;
    j["observed"] = d.observed;
    j["target"] = d.target;
    j["proposal"] = d.proposal;
  }
  return j.dump();
}

scaling_decision decode_scaling(std::string_view value) {
  auto j = json::parse(value);
  scaling_decision d;
  d.app = j.value("app", "");
  d.ts_ns = j.value("ts", int64_t{0});
  d.from = j.value("from", 0);
  d.to = j.value("to", 0);
  d.reason = j.value("reason", "");
  d.rule = j.value("rule", "");
  d.metric = j.value("metric", "");
  d.window = j.value("window", "");
  d.observed = j.value("observed", 0.0);
  d.target = j.value("target", 0.0);
  d.proposal = j.value("proposal", 0);
  return d;
}

write_op put_app_op(const app_record& r) {
  return write_op{write_op::put, apps_table, r.name, encode(r)};
}

write_op erase_app_op(const std::string& name) {
  return write_op{write_op::erase, apps_table, name, {}};
}

write_op put_instance_op(const instance_record& r) {
  return write_op{write_op::put, instances_table, instance_key(r.app, r.id), encode(r)};
}

write_op erase_instance_op(const std::string& app, const std::string& id) {
  return write_op{write_op::erase, instances_table, instance_key(app, id), {}};
}

write_op scaling_op(const scaling_decision& d) {
  return write_op{write_op::put, scaling_table, scaling_key(d.app, d.ts_ns), encode(d)};
}

std::optional<app_record> get_app(const lmdb_env& env, const std::string& name) {
  auto raw = env.read([&](txn& t) { return t.get(apps_table, name); });
  if (!raw)
    return std::nullopt;
  return decode_app(*raw);
}

std::vector<app_record> list_apps(const lmdb_env& env) {
  std::vector<app_record> out;
  env.read([&](txn& t) {
    t.scan(apps_table, "", [&](std::string_view, std::string_view v) {
      out.push_back(decode_app(v));
      return true;
    });
  });
  return out;
}

std::vector<instance_record> list_instances(const lmdb_env& env, const std::string& app) {
  std::vector<instance_record> out;
  auto prefix = app + '/';
  env.read([&](txn& t) {
    t.scan(instances_table, prefix, [&](std::string_view k, std::string_view v) {
      if (k.substr(0, prefix.size()) != prefix)
        return false;
      out.push_back(decode_instance(v));
      return true;
    });
  });
  return out;
}

std::vector<instance_record> list_all_instances(const lmdb_env& env) {
  std::vector<instance_record> out;
  env.read([&](txn& t) {
    t.scan(instances_table, "", [&](std::string_view, std::string_view v) {
      out.push_back(decode_instance(v));
      return true;
    });
  });
  return out;
}

std::vector<scaling_decision> scaling_page(const lmdb_env& env, const std::string& app,
                                           const std::string& before, size_t limit,
                                           std::string& next) {
  std::vector<scaling_decision> out;
  auto start = before; // `next` may be the caller's `before`
  next.clear();
  auto prefix = app + '\0';
  // The cursor is the key's part after the app: "TS-COUNTER" (digits, '-',
  // hex); anything else starts from the newest, so no cursor reads another app.
  bool valid = !start.empty() && start.size() <= 40 &&
               start.find_first_not_of("0123456789abcdef-") == std::string::npos;
  std::string last;
  env.read([&](txn& t) {
    t.scan_reverse(scaling_table, valid ? prefix + start : app + '\1',
                   [&](std::string_view k, std::string_view v) {
                     if (k.substr(0, prefix.size()) != prefix)
                       return false;
                     if (out.size() == limit) {
                       next = last; // there is an older one
                       return false;
                     }
                     out.push_back(decode_scaling(v));
                     last = std::string{k.substr(prefix.size())};
                     return true;
                   });
  });
  return out;
}

std::optional<write_op> prune_scaling_op(const lmdb_env& env, const std::string& app, size_t keep) {
  auto prefix = app + '\0';
  std::string oldest_kept;
  size_t seen = 0;
  bool older = false;
  env.read([&](txn& t) {
    t.scan_reverse(scaling_table, app + '\1', [&](std::string_view k, std::string_view) {
      if (k.substr(0, prefix.size()) != prefix)
        return false;
      if (seen == keep) {
        older = true;
        return false;
      }
      oldest_kept = std::string{k};
      ++seen;
      return true;
    });
  });
  if (!older)
    return std::nullopt;
  // [app NUL, the oldest kept): everything before it (all of them for keep 0).
  return write_op{write_op::erase_range, scaling_table, prefix,
                  keep == 0 ? app + '\1' : oldest_kept};
}

write_batch purge_app_ops(const lmdb_env& env, const std::string& app) {
  write_batch ops;
  for (auto& r : list_instances(env, app))
    ops.push_back(erase_instance_op(app, r.id));
  ops.push_back(write_op{write_op::erase_range, scaling_table, app + '\0', app + '\1'});
  ops.push_back(erase_app_op(app));
  return ops;
}

} // namespace troupe::persistence
