#define CAF_SUITE ask
#include "support/dsl.hpp"

#include <nlohmann/json.hpp>

#include "actors/core/http_bridge.hpp"
#include "http/api/ask.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

/// An exchange that keeps what the route answered.
class recorded_exchange : public http::exchange {
public:
  const http::request& req() const override { return req_; }
  void reply(http::response res) override {
    ++replies;
    answer = std::move(res);
  }
  std::shared_ptr<http::sse_stream>
  stream(std::vector<std::pair<std::string, std::string>>) override {
    return nullptr;
  }
  std::shared_ptr<http::sse_stream> chunked(std::string) override { return nullptr; }

  int replies = 0;
  http::response answer;

private:
  http::request req_;
};

/// What the tests ask: echoes a word, fails on "missing", never answers "hang".
using echo_actor = caf::typed_actor<caf::replies_to<caf::get_atom, std::string>::with<std::string>>;

struct echo_state {
  std::vector<caf::typed_response_promise<std::string>> held;
  static inline const char* name = "echo";
};

echo_actor::behavior_type echo(echo_actor::stateful_pointer<echo_state> self) {
  return {
      [self](caf::get_atom, const std::string& word) -> caf::result<std::string> {
        if (word == "missing")
          return caf::make_error(ec::not_found, std::string{"no such word"});
        if (word == "hang") {
          auto rp = self->make_response_promise<std::string>();
          self->state.held.push_back(rp);
          return rp;
        }
        return word + "!";
      },
  };
}

const actor_name<echo_actor> echo_name{caf::atom("echo"), "echo actor"};

struct fixture : test::deterministic_fixture {
  fixture() {
    bridge = sys.spawn(http_bridge);
    ctx.sys = &sys;
    ctx.bridge = [this] { return bridge; };
  }

  ~fixture() override {
    caf::anon_send_exit(bridge, caf::exit_reason::user_shutdown);
    if (echo_hdl)
      caf::anon_send_exit(echo_hdl, caf::exit_reason::user_shutdown);
    withdraw(sys, echo_name);
    run();
  }

  void register_echo() {
    echo_hdl = sys.spawn(echo);
    enroll(sys, echo_name, echo_hdl);
  }

  /// Asks the echo actor for `word`; the reply is "<word>!" with status 200.
  void ask_echo(std::string word, system_errors system = system_errors::internal,
                failure_handler on_failure = {}) {
    callee<echo_actor> to{echo_name, "the echo actor is not running", 5s, system};
    auto ex_ptr = ex;
    ask(
        ctx, ex, to, std::make_tuple(caf::get_atom::value, std::move(word)),
        [ex_ptr](const std::string& reply) { ex_ptr->reply(http::response::json(200, reply)); },
        std::move(on_failure));
    // Delivers messages without firing timers: a timeout is the test's to trigger.
    consume_messages();
  }

  /// A field of the answer's error object.
  std::string error(const char* field) const {
    auto body = nlohmann::json::parse(ex->answer.body);
    return body["error"][field].get<std::string>();
  }

  http_bridge_actor bridge;
  echo_actor echo_hdl;
  node_context ctx;
  std::shared_ptr<recorded_exchange> ex = std::make_shared<recorded_exchange>();
};

} // namespace

CAF_TEST_FIXTURE_SCOPE(ask_tests, fixture)

CAF_TEST(the reply reaches the route continuation) {
  register_echo();
  ask_echo("hello");
  CAF_CHECK_EQUAL(ex->replies, 1);
  CAF_CHECK_EQUAL(ex->answer.status, 200u);
  CAF_CHECK_EQUAL(ex->answer.body, "hello!");
}

CAF_TEST(a callee that is not running is a 503 with its message) {
  ask_echo("hello");
  CAF_CHECK_EQUAL(ex->replies, 1);
  CAF_CHECK_EQUAL(ex->answer.status, 503u);
  CAF_CHECK_EQUAL(error("code"), "unavailable");
  CAF_CHECK_EQUAL(error("message"), "the echo actor is not running");
}

CAF_TEST(a troupe error is mapped) {
  register_echo();
  ask_echo("missing");
  CAF_CHECK_EQUAL(ex->replies, 1);
  CAF_CHECK_EQUAL(ex->answer.status, 404u);
  CAF_CHECK_EQUAL(error("code"), "not_found");
}

CAF_TEST(a timeout is mapped as the callee says) {
  register_echo();
  ask_echo("hang");
  CAF_CHECK_EQUAL(ex->replies, 0);
  advance_time(5s);
  run();
  CAF_CHECK_EQUAL(ex->replies, 1);
  CAF_CHECK_EQUAL(ex->answer.status, 500u);
  CAF_CHECK_EQUAL(error("code"), "internal");
  ex = std::make_shared<recorded_exchange>();
  ask_echo("hang", system_errors::unavailable);
  advance_time(5s);
  run();
  CAF_CHECK_EQUAL(ex->replies, 1);
  CAF_CHECK_EQUAL(ex->answer.status, 503u);
  CAF_CHECK_EQUAL(error("code"), "unavailable");
}

CAF_TEST(a route may answer a failure itself) {
  std::vector<api_error> seen;
  ask_echo("hello", system_errors::internal, [&](const api_error& e) { seen.push_back(e); });
  register_echo();
  ask_echo("missing", system_errors::internal, [&](const api_error& e) { seen.push_back(e); });
  CAF_CHECK_EQUAL(ex->replies, 0);
  CAF_REQUIRE_EQUAL(seen.size(), 2u);
  CAF_CHECK_EQUAL(seen[0].status, 503u);
  CAF_CHECK_EQUAL(seen[0].message, "the echo actor is not running");
  CAF_CHECK_EQUAL(seen[1].status, 404u);
}

CAF_TEST_FIXTURE_SCOPE_END()
