#pragma once

// A small RAII layer over LMDB. One environment per data dir; every table is a
// named database opened once at start. Many concurrent readers (read-only
// transactions, MDB_NOTLS) and one writer: the store actor.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <lmdb.h>

namespace troupe::persistence {

/// The on-disk schema this build writes and understands.
inline constexpr uint32_t schema_version = 2;

/// Tables (LMDB named databases) of the current schema.
inline const std::vector<std::string>& tables() {
  // New tables need no migration: opening a data dir creates missing ones.
  static const std::vector<std::string> xs{"meta",     "events",        "jobs",
                                           "job_logs", "logs",          "log_labels",
                                           "apps",     "app_instances", "app_scaling"};
  return xs;
}

/// An LMDB failure with the operation that caused it.
class lmdb_error : public std::runtime_error {
public:
  lmdb_error(const std::string& what, int rc);
  int code() const noexcept { return rc_; }

private:
  int rc_;
};

/// Encodes a sequence number as a key that sorts numerically.
std::string seq_key(uint64_t seq);
/// Decodes a key written by seq_key (0 if malformed).
uint64_t seq_from_key(std::string_view key);

class lmdb_env;

/// A transaction; aborted on destruction unless committed.
class txn {
public:
  txn(const lmdb_env& env, bool read_only);
  ~txn();
  txn(const txn&) = delete;
  txn& operator=(const txn&) = delete;

  std::optional<std::string> get(const std::string& table, std::string_view key) const;
  void put(const std::string& table, std::string_view key, std::string_view value);
  /// Returns false if the key was absent.
  bool erase(const std::string& table, std::string_view key);
  /// Removes the keys in [from, to) (to empty: to the end); returns how many.
  uint64_t erase_range(const std::string& table, std::string_view from, std::string_view to);
  /// Entries and bytes of pages (branch, leaf, overflow) a table holds.
  struct table_size {
    uint64_t entries = 0;
    uint64_t bytes = 0;
  };
  table_size size(const std::string& table) const;
  /// Stores `value` under last sequence key + 1 and returns that sequence.
  uint64_t append(const std::string& table, std::string_view value);
  /// The highest sequence key of a table (0 if empty).
  uint64_t last_seq(const std::string& table) const;
  /// Visits entries with key >= `from` in order until `fn` returns false.
  void scan(const std::string& table, std::string_view from,
            const std::function<bool(std::string_view key, std::string_view value)>& fn) const;
  /// Visits entries with key < `before` (all if empty) from the last down,
  /// until `fn` returns false.
  void
  scan_reverse(const std::string& table, std::string_view before,
               const std::function<bool(std::string_view key, std::string_view value)>& fn) const;
  void commit();
  MDB_txn* raw() const noexcept { return txn_; }
  MDB_dbi dbi(const std::string& table) const;

private:
  const lmdb_env& env_;
  MDB_txn* txn_ = nullptr;
};

/// An open LMDB environment with its tables.
class lmdb_env {
public:
  /// Opens (creating if needed) the environment under `dir`, creates the
  /// tables, and checks the schema version: a newer one is refused, an older
  /// one is migrated within the same write transaction (all or nothing).
  static std::shared_ptr<lmdb_env> open(const std::string& dir, uint64_t map_size);
  ~lmdb_env();
  lmdb_env(const lmdb_env&) = delete;
  lmdb_env& operator=(const lmdb_env&) = delete;

  MDB_env* handle() const noexcept { return env_; }
  MDB_dbi dbi(const std::string& table) const;
  const std::string& dir() const noexcept { return dir_; }

  /// Runs `fn` inside a read-only transaction.
  template <class F> auto read(F&& fn) const {
    txn t{*this, true};
    return fn(t);
  }

private:
  lmdb_env() = default;
  MDB_env* env_ = nullptr;
  std::string dir_;
  std::unordered_map<std::string, MDB_dbi> dbis_;
};

} // namespace troupe::persistence
