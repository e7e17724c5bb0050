// A job spec as clients send it, read as JSON and as YAML. Either parser may
// refuse it with spec_error (whose message must fit a JSON error) and nothing
// else; an accepted spec must come back unchanged from its stored form
// (to_json → job_spec_from_json). The first byte's low bit says whether a
// default command is given (the seed endpoints), the rest is the document.

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "actors/jobs/job_spec.hpp"
#include "fuzz_check.hpp"
#include "http/router.hpp"

using namespace troupe;

namespace {

bool same(const job_spec& a, const job_spec& b) {
  return a.name == b.name && a.argv == b.argv && a.shell == b.shell && a.env == b.env &&
         a.cwd == b.cwd && a.timeout_seconds == b.timeout_seconds && a.priority == b.priority &&
         a.labels == b.labels && a.retries == b.retries &&
         a.resources.cpu_seconds == b.resources.cpu_seconds &&
         a.resources.memory_mb == b.resources.memory_mb &&
         a.resources.open_files == b.resources.open_files;
}

template <class Parse>
void check(Parse parse, const std::string& doc, const std::optional<std::string>& default_command) {
  job_spec spec;
  try {
    spec = parse(doc, default_command);
  } catch (const spec_error& e) {
    auto res = http::response::error(400, "invalid_spec", e.what(), e.field());
    FUZZ_CHECK(nlohmann::json::accept(res.body), res.body);
    return;
  }
  FUZZ_CHECK(!spec.argv.empty(), "accepted a spec without a command");
  auto stored = to_json(spec);
  FUZZ_CHECK(nlohmann::json::accept(stored), stored);
  job_spec back;
  try {
    back = job_spec_from_json(stored);
  } catch (const spec_error& e) {
    FUZZ_CHECK(false, std::string{"the stored form is refused: "} + e.what() + "\n  " + stored);
  }
  FUZZ_CHECK(same(spec, back), "the stored form reads back differently: " + stored +
                                   "\n  read back: " + to_json(back));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0)
    return 0;
  std::optional<std::string> default_command;
  if (data[0] & 1)
    default_command = "make test";
  std::string doc{fuzz::as_text(data + 1, size - 1)};
  check(parse_job_spec_json, doc, default_command);
  check(parse_job_spec_yaml, doc, default_command);
  return 0;
}
