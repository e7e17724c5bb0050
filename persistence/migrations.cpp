#include "persistence/migrations.hpp"

#include <stdexcept>

#include "persistence/lmdb_env.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe::persistence {

uint32_t check_schema(txn& w, const std::string& dir) {
  uint32_t found = schema_version;
  if (auto v = w.get("meta", "schema_version")) {
    try {
      found = static_cast<uint32_t>(std::stoul(*v));
    } catch (const std::exception&) {
      throw std::runtime_error("data dir " + dir + ": unreadable schema version '" + *v + "'");
    }
    if (found > schema_version)
      throw std::runtime_error("data dir " + dir + " was written by schema version " +
                               std::to_string(found) + ", newer than this troupe's " +
                               std::to_string(schema_version) +
                               "; refusing to open it (upgrade troupe or use another data dir)");
  } else {
    w.put("meta", "schema_version", std::to_string(schema_version));
  }
  return found;
}

void migrate(txn& w, uint32_t found, const std::string& dir) {
  // Schema 1 kept every job line twice (JSON in `logs`, inline in
  // `job_logs`); schema 2 keeps one binary copy and a per-job index.
  auto appended = migrate_logs_v1(w);
  w.put("meta", "schema_version", std::to_string(schema_version));
  logging::get("store")->info("data dir {}: migrated schema {} to {} ({} job lines had no "
                              "copy in the log table and were added to it)",
                              dir, found, schema_version, appended);
}

} // namespace troupe::persistence
