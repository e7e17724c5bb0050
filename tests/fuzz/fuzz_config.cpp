// The daemon's configuration as an operator writes it: the input is a YAML
// config file, or a dotenv file when it starts with `TROUPE_` or `export`.
// load_config may refuse it only with config_error.

#include <cstdint>
#include <fstream>
#include <string>

#include "fuzz_check.hpp"
#include "runtime/ground/config.hpp"

using namespace troupe;

namespace {

void write_file(const std::string& path, std::string_view text) {
  std::ofstream out{path, std::ios::binary | std::ios::trunc};
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  FUZZ_CHECK(out.good(), "cannot write " + path);
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto text = fuzz::as_text(data, size);
  config_sources src;
  src.file = fuzz::scratch() / "troupe.yaml";
  src.dotenv.clear();
  if (starts_with(text, "TROUPE_") || starts_with(text, "export")) {
    // The empty YAML file also keeps TROUPE_CONFIG from naming another file.
    write_file(src.file, "");
    src.dotenv = fuzz::scratch() / ".env";
    write_file(src.dotenv, text);
  } else {
    write_file(src.file, text);
  }
  config c;
  try {
    c = load_config(src);
  } catch (const config_error& e) {
    FUZZ_CHECK(!e.path().empty(), e.what());
    return 0;
  }
  // A config that loaded has a listen address these can split.
  (void)c.listen_host();
  (void)c.listen_port();
  return 0;
}
