// The JSON troupe writes by hand around bytes it does not control (job
// output, paths, labels): logging::append_json_escaped (error bodies,
// structured logs), troupe::append_json_string and to_api_json (the logs
// API) and the Loki push bodies must be valid JSON for any bytes, and must
// keep valid UTF-8 text as it is.

#include <cstdint>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>
#include <nlohmann/json.hpp>

#include "actors/logs/loki.hpp"
#include "fuzz_check.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/logging.hpp"

using namespace troupe;
using nlohmann::json;

namespace {

bool valid_utf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

// A JSON string literal decodes to `raw` when raw is valid UTF-8.
void check_string(const std::string& literal, const std::string& raw) {
  json parsed;
  try {
    parsed = json::parse(literal);
  } catch (const json::parse_error& e) {
    FUZZ_CHECK(false, std::string{e.what()} + "\n  " + literal);
  }
  FUZZ_CHECK(parsed.is_string(), literal);
  if (valid_utf8(raw))
    FUZZ_CHECK(parsed.get<std::string>() == raw, literal);
}

void check_escapers(const std::string& raw) {
  std::string escaped = "\"";
  logging::append_json_escaped(escaped, raw);
  escaped += '"';
  check_string(escaped, raw);
  std::string quoted;
  troupe::append_json_string(quoted, raw);
  check_string(quoted, raw);
}

void check_log_record(FuzzedDataProvider& in) {
  log_record r;
  r.seq = in.ConsumeIntegral<uint64_t>();
  r.ts_ns = in.ConsumeIntegral<int64_t>();
  r.stream = in.ConsumeIntegralInRange<uint8_t>(1, 2);
  r.level = in.ConsumeRandomLengthString(16);
  r.service = in.ConsumeRandomLengthString(16);
  r.instance = in.ConsumeRandomLengthString(16);
  r.source = in.ConsumeRandomLengthString(16);
  r.request_id = in.ConsumeRandomLengthString(16);
  r.ns = in.ConsumeRandomLengthString(16);
  r.node = in.ConsumeRandomLengthString(16);
  r.line = in.ConsumeRandomLengthString(256);
  auto out = persistence::to_api_json(r);
  FUZZ_CHECK(json::accept(out), out);
}

void check_push_body(FuzzedDataProvider& in) {
  std::vector<loki::entry> entries(in.ConsumeIntegralInRange<size_t>(0, 6));
  for (auto& e : entries) {
    e.ts_ns = in.ConsumeIntegral<int64_t>();
    auto labels = in.ConsumeIntegralInRange<int>(0, 4);
    for (int i = 0; i < labels; ++i) {
      auto k = in.ConsumeRandomLengthString(12);
      e.labels[k] = in.ConsumeRandomLengthString(24);
    }
    e.request_id = in.ConsumeRandomLengthString(24);
    e.line = in.ConsumeRandomLengthString(256);
  }
  for (auto mode : {loki::request_id_mode::structured_metadata, loki::request_id_mode::label}) {
    auto body = loki::push_body(entries, mode);
    json parsed;
    try {
      parsed = json::parse(body);
    } catch (const json::parse_error& e) {
      FUZZ_CHECK(false, std::string{e.what()} + "\n  " + body);
    }
    size_t values = 0;
    for (auto& s : parsed.at("streams"))
      values += s.at("values").size();
    FUZZ_CHECK(values == entries.size(), body);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  check_escapers(std::string{fuzz::as_text(data, size)});
  FuzzedDataProvider in{data, size};
  check_log_record(in);
  check_push_body(in);
  return 0;
}
