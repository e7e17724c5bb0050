#include "persistence/lmdb_env.hpp"

#include <cstring>
#include <filesystem>

#include "persistence/migrations.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe::persistence {

namespace {

void check(int rc, const char* what) {
  if (rc != MDB_SUCCESS)
    throw lmdb_error(what, rc);
}

MDB_val to_val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}

std::string_view from_val(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

} // namespace

lmdb_error::lmdb_error(const std::string& what, int rc)
    : std::runtime_error(what + ": " + mdb_strerror(rc)), rc_(rc) {}

std::string seq_key(uint64_t seq) {
  std::string key(8, '\0');
  for (int i = 7; i >= 0; --i) {
    key[static_cast<size_t>(i)] = static_cast<char>(seq & 0xff);
    seq >>= 8;
  }
  return key;
}

uint64_t seq_from_key(std::string_view key) {
  if (key.size() != 8)
    return 0;
  uint64_t seq = 0;
  for (unsigned char c : key)
    seq = (seq << 8) | c;
  return seq;
}

// -- txn ----------------------------------------------------------------------

txn::txn(const lmdb_env& env, bool read_only) : env_(env) {
  check(mdb_txn_begin(env.handle(), nullptr, read_only ? MDB_RDONLY : 0, &txn_), "mdb_txn_begin");
}

txn::~txn() {
  if (txn_)
    mdb_txn_abort(txn_);
}

std::optional<std::string> txn::get(const std::string& table, std::string_view key) const {
  auto k = to_val(key);
  MDB_val v;
  auto rc = mdb_get(txn_, env_.dbi(table), &k, &v);
  if (rc == MDB_NOTFOUND)
    return std::nullopt;
  check(rc, "mdb_get");
  return std::string{from_val(v)};
}

void txn::put(const std::string& table, std::string_view key, std::string_view value) {
  auto k = to_val(key);
  auto v = to_val(value);
  check(mdb_put(txn_, env_.dbi(table), &k, &v, 0), "mdb_put");
}

bool txn::erase(const std::string& table, std::string_view key) {
  auto k = to_val(key);
  auto rc = mdb_del(txn_, env_.dbi(table), &k, nullptr);
  if (rc == MDB_NOTFOUND)
    return false;
  check(rc, "mdb_del");
  return true;
}

namespace {

using cursor_ptr = std::unique_ptr<MDB_cursor, void (*)(MDB_cursor*)>;

/// A cursor on `dbi` at the first key >= `from` (the first key if `from` is
/// empty); `rc` says whether there is one.
cursor_ptr cursor_at(MDB_txn* txn, MDB_dbi dbi, std::string_view from, MDB_val& k, MDB_val& v,
                     int& rc) {
  MDB_cursor* raw = nullptr;
  check(mdb_cursor_open(txn, dbi, &raw), "mdb_cursor_open");
  cursor_ptr cur{raw, mdb_cursor_close};
  k = to_val(from);
  rc = from.empty() ? mdb_cursor_get(raw, &k, &v, MDB_FIRST)
                    : mdb_cursor_get(raw, &k, &v, MDB_SET_RANGE);
  return cur;
}

} // namespace

uint64_t txn::erase_range(const std::string& table, std::string_view from, std::string_view to) {
  MDB_val k, v;
  int rc;
  auto cur = cursor_at(txn_, env_.dbi(table), from, k, v, rc);
  uint64_t n = 0;
  while (rc == MDB_SUCCESS) {
    if (!to.empty() && from_val(k) >= to)
      break;
    check(mdb_cursor_del(cur.get(), 0), "mdb_cursor_del");
    ++n;
    // After a delete, MDB_NEXT yields the entry that followed the deleted one.
    rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
    check(rc, "mdb_cursor_get");
  return n;
}

txn::table_size txn::size(const std::string& table) const {
  MDB_stat st;
  check(mdb_stat(txn_, env_.dbi(table), &st), "mdb_stat");
  return {st.ms_entries,
          (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * uint64_t{st.ms_psize}};
}

uint64_t txn::last_seq(const std::string& table) const {
  MDB_cursor* cur = nullptr;
  check(mdb_cursor_open(txn_, env_.dbi(table), &cur), "mdb_cursor_open");
  MDB_val k, v;
  auto rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
  mdb_cursor_close(cur);
  if (rc == MDB_NOTFOUND)
    return 0;
  check(rc, "mdb_cursor_get");
  return seq_from_key(from_val(k));
}

uint64_t txn::append(const std::string& table, std::string_view value) {
  auto seq = last_seq(table) + 1;
  auto key = seq_key(seq);
  auto k = to_val(key);
  auto v = to_val(value);
  check(mdb_put(txn_, env_.dbi(table), &k, &v, MDB_APPEND), "mdb_put(append)");
  return seq;
}

void txn::scan(const std::string& table, std::string_view from,
               const std::function<bool(std::string_view, std::string_view)>& fn) const {
  MDB_val k, v;
  int rc;
  auto cur = cursor_at(txn_, env_.dbi(table), from, k, v, rc);
  while (rc == MDB_SUCCESS) {
    if (!fn(from_val(k), from_val(v)))
      return;
    rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND)
    check(rc, "mdb_cursor_get");
}

void txn::scan_reverse(const std::string& table, std::string_view before,
                       const std::function<bool(std::string_view, std::string_view)>& fn) const {
  MDB_cursor* cur = nullptr;
  check(mdb_cursor_open(txn_, env_.dbi(table), &cur), "mdb_cursor_open");
  std::unique_ptr<MDB_cursor, void (*)(MDB_cursor*)> guard{cur, mdb_cursor_close};
  MDB_val k, v;
  int rc;
  if (before.empty()) {
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
  } else {
    k = to_val(before);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    // SET_RANGE lands on the first key >= before: step back once.
    rc = rc == MDB_SUCCESS ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
                           : mdb_cursor_get(cur, &k, &v, MDB_LAST);
  }
  while (rc == MDB_SUCCESS) {
    if (!fn(from_val(k), from_val(v)))
      return;
    rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
  }
  if (rc != MDB_NOTFOUND)
    check(rc, "mdb_cursor_get");
}

MDB_dbi txn::dbi(const std::string& table) const {
  return env_.dbi(table);
}

void txn::commit() {
  auto rc = mdb_txn_commit(txn_);
  txn_ = nullptr;
  check(rc, "mdb_txn_commit");
}

// -- lmdb_env -------------------------------------------------------------------

namespace {

/// The store is troupe's alone: its directory 0700, its files 0600, also
/// when an older troupe created them with wider modes.
void make_private(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace);
  for (auto name : {"data.mdb", "lock.mdb"}) {
    std::error_code ec;
    auto file = fs::path{dir} / name;
    auto st = fs::symlink_status(file, ec);
    if (!ec && fs::is_regular_file(st) &&
        (st.permissions() & (fs::perms::group_all | fs::perms::others_all)) != fs::perms::none)
      fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write,
                      fs::perm_options::replace);
  }
}

} // namespace

std::shared_ptr<lmdb_env> lmdb_env::open(const std::string& dir, uint64_t map_size) {
  make_private(dir);
  std::shared_ptr<lmdb_env> self{new lmdb_env};
  self->dir_ = dir;
  check(mdb_env_create(&self->env_), "mdb_env_create");
  check(mdb_env_set_maxdbs(self->env_, 64), "mdb_env_set_maxdbs");
  check(mdb_env_set_maxreaders(self->env_, 512), "mdb_env_set_maxreaders");
  check(mdb_env_set_mapsize(self->env_, map_size), "mdb_env_set_mapsize");
  // MDB_NOTLS: read transactions are not tied to threads (asio and CAF move
  // work between threads).
  check(mdb_env_open(self->env_, dir.c_str(), MDB_NOTLS, 0600), "mdb_env_open");
  // Reader slots of processes that died (kill -9) are released.
  int dead = 0;
  mdb_reader_check(self->env_, &dead);
  // One write transaction checks the schema first (aborting leaves a newer
  // data dir untouched), then creates every table; dbi handles stay valid for
  // all later transactions.
  txn w{*self, false};
  auto open_table = [&](const std::string& name) {
    MDB_dbi dbi;
    check(mdb_dbi_open(w.raw(), name.c_str(), MDB_CREATE, &dbi), "mdb_dbi_open");
    self->dbis_.emplace(name, dbi);
  };
  open_table("meta");
  auto found = check_schema(w, dir);
  for (auto& name : tables())
    if (name != "meta")
      open_table(name);
  if (found < schema_version)
    migrate(w, found, dir);
  w.commit();
  return self;
}

lmdb_env::~lmdb_env() {
  if (env_)
    mdb_env_close(env_);
}

MDB_dbi lmdb_env::dbi(const std::string& table) const {
  auto i = dbis_.find(table);
  if (i == dbis_.end())
    throw std::invalid_argument("unknown table: " + table);
  return i->second;
}

} // namespace troupe::persistence
