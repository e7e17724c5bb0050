// Reference for benchmarks/logs.sh: puts the lines of a file straight into
// LMDB, 1,000 lines per transaction, and prints lines/s — the floor any
// persisted log pipeline is compared against.
//
//   lmdb_lines FILE DIR

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include <lmdb.h>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s FILE DIR\n", argv[0]);
    return 2;
  }
  MDB_env* env = nullptr;
  mdb_env_create(&env);
  mdb_env_set_mapsize(env, 4ull << 30);
  if (mdb_env_open(env, argv[2], 0, 0644) != 0) {
    std::fprintf(stderr, "cannot open %s\n", argv[2]);
    return 1;
  }
  std::ifstream in(argv[1]);
  auto start = std::chrono::steady_clock::now();
  uint64_t seq = 0;
  uint64_t bytes = 0;
  MDB_txn* txn = nullptr;
  MDB_dbi dbi;
  std::string line;
  while (std::getline(in, line)) {
    if (txn == nullptr) {
      mdb_txn_begin(env, nullptr, 0, &txn);
      mdb_dbi_open(txn, nullptr, 0, &dbi);
    }
    ++seq;
    unsigned char key[8];
    for (int i = 0; i < 8; ++i)
      key[i] = static_cast<unsigned char>(seq >> (56 - 8 * i));
    MDB_val k{8, key};
    MDB_val v{line.size(), line.data()};
    mdb_put(txn, dbi, &k, &v, MDB_APPEND);
    bytes += line.size() + 1;
    if (seq % 1000 == 0) {
      mdb_txn_commit(txn);
      txn = nullptr;
    }
  }
  if (txn != nullptr)
    mdb_txn_commit(txn);
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("lines=%llu seconds=%.3f lines_per_s=%.0f mib_per_s=%.1f\n",
              static_cast<unsigned long long>(seq), secs, seq / secs, bytes / secs / 1048576.0);
  mdb_env_close(env);
  return 0;
}
