// A multipart/form-data request as curl -F sends it: the input's first line
// is the Content-Type header, the rest the body. parse_multipart may refuse
// it (std::invalid_argument, whose message must fit a JSON error) but must
// not fail otherwise, and what it returns must come from the body.

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_check.hpp"
#include "http/multipart.hpp"
#include "http/router.hpp"

using namespace troupe;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto in = fuzz::as_text(data, size);
  auto eol = std::min(in.find('\n'), in.size());
  auto content_type = in.substr(0, eol);
  auto body = in.substr(std::min(eol + 1, in.size()));
  std::vector<http::form_part> parts;
  try {
    parts = http::parse_multipart(content_type, body);
  } catch (const std::invalid_argument& e) {
    auto res = http::response::error(400, "invalid_multipart", e.what());
    FUZZ_CHECK(nlohmann::json::accept(res.body), res.body);
    return 0;
  }
  size_t total = 0;
  for (auto& p : parts) {
    total += p.data.size();
    FUZZ_CHECK(std::search(body.begin(), body.end(), p.data.begin(), p.data.end()) != body.end(),
               "part " + p.name + " holds bytes the body does not");
    auto* first = http::find_part(parts, p.name);
    FUZZ_CHECK(first != nullptr && first <= &p && first->name == p.name, p.name);
  }
  FUZZ_CHECK(total <= body.size(), "parts hold more bytes than the body");
  return 0;
}
