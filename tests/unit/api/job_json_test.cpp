#define CAF_SUITE job_json
#include "support/dsl.hpp"

#include <nlohmann/json.hpp>

#include "http/api/job_json.hpp"
#include "http/api/page.hpp"

using namespace troupe;

CAF_TEST(the api shows the submitter or null) {
  persistence::job_record rec;
  rec.id = "0190-a";
  rec.submitted_by = "ci-bot";
  rec.spec = R"({"command":["true"],"env":{}})";
  auto api = nlohmann::json::parse(to_api_json(rec));
  CAF_CHECK_EQUAL(api["submitted_by"].get<std::string>(), "ci-bot");
  // A record stored before the field existed.
  auto old = persistence::decode_job(R"({"id":"0190-b","status":"succeeded","spec":"{}"})");
  CAF_CHECK(nlohmann::json::parse(to_api_json(old))["submitted_by"].is_null());
}

CAF_TEST(the api shows env names but never their values) {
  persistence::job_record rec;
  rec.id = "0190-c";
  rec.spec = R"({"command":["env"],"env":{"API_KEY":"s3cr3t-value","EMPTY":""},"name":"n"})";
  auto text = to_api_json(rec);
  CAF_CHECK_EQUAL(text.find("s3cr3t-value"), std::string::npos);
  auto api = nlohmann::json::parse(text);
  CAF_CHECK_EQUAL(api["spec"]["env"].dump(), R"({"API_KEY":"<redacted>","EMPTY":"<redacted>"})");
  CAF_CHECK_EQUAL(api["spec"]["name"].get<std::string>(), "n");
  // The stored record keeps the values: the job needs them.
  auto stored = persistence::decode_job(persistence::encode(rec));
  CAF_CHECK(stored.spec.find("s3cr3t-value") != std::string::npos);
}

CAF_TEST(a page lists its items and where the next one starts) {
  std::vector<int> none;
  auto render = [](int x) { return std::to_string(x); };
  CAF_CHECK_EQUAL(page_body("events", none, render, "next_since", "7"),
                  R"({"events":[],"next_since":7})");
  std::vector<int> three{1, 2, 3};
  CAF_CHECK_EQUAL(page_body("jobs", three, render, "next_cursor", "null"),
                  R"({"jobs":[1,2,3],"next_cursor":null})");
}
