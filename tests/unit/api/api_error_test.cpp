#define CAF_SUITE api_error
#include "support/dsl.hpp"

#include <nlohmann/json.hpp>

#include "http/api/api_error.hpp"

using namespace troupe;

namespace {

struct mapping {
  caf::error err;
  system_errors system;
  unsigned status;
  const char* code;
};

caf::error troupe_error(ec code) {
  return caf::make_error(code, std::string{"why"});
}

} // namespace

CAF_TEST(every troupe code and CAF error has one answer) {
  std::vector<mapping> table{
      {troupe_error(ec::shutting_down), system_errors::internal, 503, "shutting_down"},
      {troupe_error(ec::unavailable), system_errors::internal, 503, "unavailable"},
      {troupe_error(ec::not_found), system_errors::internal, 404, "not_found"},
      {troupe_error(ec::invalid_argument), system_errors::internal, 400, "invalid_request"},
      {troupe_error(ec::none), system_errors::internal, 500, "internal"},
      {caf::error{}, system_errors::unavailable, 500, "internal"},
      {troupe_error(ec::unspecified), system_errors::internal, 500, "internal"},
      {troupe_error(ec::store_failure), system_errors::internal, 500, "internal"},
      {troupe_error(ec::schema_too_new), system_errors::internal, 500, "internal"},
      {troupe_error(ec::restart_intensity), system_errors::internal, 500, "internal"},
      // Troupe's codes read the same whatever the route says of CAF's errors.
      {troupe_error(ec::not_found), system_errors::unavailable, 404, "not_found"},
      {troupe_error(ec::store_failure), system_errors::unavailable, 500, "internal"},
      // CAF's errors: as the route says.
      {caf::make_error(caf::sec::request_timeout), system_errors::internal, 500, "internal"},
      {caf::make_error(caf::sec::request_timeout), system_errors::unavailable, 503, "unavailable"},
      {caf::make_error(caf::sec::request_receiver_down), system_errors::internal, 500, "internal"},
      {caf::make_error(caf::sec::request_receiver_down), system_errors::unavailable, 503,
       "unavailable"},
      {caf::make_error(caf::sec::unexpected_message), system_errors::internal, 500, "internal"},
      {caf::make_error(caf::sec::unexpected_message), system_errors::unavailable, 503,
       "unavailable"},
  };
  for (auto& m : table) {
    auto got = to_api_error(m.err, m.system);
    CAF_MESSAGE("error " << caf::to_string(m.err));
    CAF_CHECK_EQUAL(got.status, m.status);
    CAF_CHECK_EQUAL(got.code, m.code);
    CAF_CHECK_EQUAL(got.message, caf::to_string(m.err));
  }
}

CAF_TEST(the internal answer is the default for CAF errors) {
  auto got = to_api_error(caf::make_error(caf::sec::request_timeout));
  CAF_CHECK_EQUAL(got.status, 500u);
  CAF_CHECK_EQUAL(got.code, "internal");
}

CAF_TEST(an api error answers with the error shape) {
  auto res = to_response(api_error{404, "not_found", "no job j-1"});
  CAF_CHECK_EQUAL(res.status, 404u);
  CAF_CHECK_EQUAL(res.content_type, "application/json");
  auto body = nlohmann::json::parse(res.body);
  CAF_CHECK_EQUAL(body.dump(), R"({"error":{"code":"not_found","message":"no job j-1"}})");
}
