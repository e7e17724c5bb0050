#include "http/api/versions.hpp"

#include <algorithm>

#include <boost/version.hpp>
#include <caf/config.hpp>
#include <lmdb.h>
#include <nlohmann/json.hpp>
#include <openssl/opensslv.h>
#include <spdlog/version.h>

namespace troupe {

namespace {

std::string dotted(int major, int minor, int patch) {
  return std::to_string(major) + '.' + std::to_string(minor) + '.' + std::to_string(patch);
}

/// Boost names itself "1_81" in its headers; the API has always said "1.81".
std::string boost_version() {
  std::string v = BOOST_LIB_VERSION;
  std::replace(v.begin(), v.end(), '_', '.');
  return v;
}

} // namespace

std::vector<std::pair<std::string, std::string>> library_versions() {
  return {
      {"caf", dotted(CAF_MAJOR_VERSION, CAF_MINOR_VERSION, CAF_PATCH_VERSION)},
      {"boost", boost_version()},
      {"nlohmann_json", dotted(NLOHMANN_JSON_VERSION_MAJOR, NLOHMANN_JSON_VERSION_MINOR,
                               NLOHMANN_JSON_VERSION_PATCH)},
      {"spdlog", dotted(SPDLOG_VER_MAJOR, SPDLOG_VER_MINOR, SPDLOG_VER_PATCH)},
      {"lmdb", dotted(MDB_VERSION_MAJOR, MDB_VERSION_MINOR, MDB_VERSION_PATCH)},
      {"openssl", OPENSSL_VERSION_STR},
  };
}

} // namespace troupe
