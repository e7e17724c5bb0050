#pragma once

// Schema versions of a data dir and the steps from one to the next, run by
// lmdb_env::open inside its first write transaction (all or nothing).

#include <cstdint>
#include <string>

namespace troupe::persistence {

class txn;

/// The schema version of the data dir `dir` (a fresh one gets this build's).
/// Throws std::runtime_error if it is unreadable or newer than this build's.
uint32_t check_schema(txn& w, const std::string& dir);

/// Rewrites the tables of schema `found` into this build's schema and records
/// the new version.
void migrate(txn& w, uint32_t found, const std::string& dir);

} // namespace troupe::persistence
