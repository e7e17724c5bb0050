#define CAF_SUITE redis
#include "support/dsl.hpp"

#include "persistence/redis.hpp"
#include "support/servers.hpp"
#include "support/temp_dir.hpp"

#include <algorithm>

using namespace std::chrono_literals;
using namespace troupe;
using redis::reply;
using kind = redis::reply::kind;

namespace {

constexpr auto timeout = 2000ms;

/// A fresh redis-server per test on a random loopback port.
struct fixture {
  test::temp_dir dir;
  std::string start_error;
  std::optional<test::external_server> server;

  fixture() : server(test::start_redis(dir.path(), 0, &start_error)) {}

  redis::url_parts where(int db = 0) const {
    redis::url_parts out;
    out.host = "127.0.0.1";
    out.port = server->port();
    out.db = db;
    return out;
  }
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// The reply, or a nil reply with the failure logged.
reply run(redis::client& c, const std::vector<std::string>& args) {
  std::string error;
  auto r = c.command(args, &error);
  if (!r) {
    CAF_MESSAGE(args.front() << " failed: " << error);
    return {};
  }
  return *r;
}

} // namespace

CAF_TEST(parse_url accepts redis URLs) {
  std::string error;
  auto u = redis::parse_url("redis://localhost", &error);
  CAF_REQUIRE(u);
  CAF_CHECK_EQUAL(u->host, "localhost");
  CAF_CHECK_EQUAL(u->port, 6379);
  CAF_CHECK_EQUAL(u->db, 0);
  CAF_CHECK_EQUAL(u->password, "");
  CAF_CHECK_EQUAL(u->username, "");
  u = redis::parse_url("redis://:s3cret@10.0.0.1:6380/2", &error);
  CAF_REQUIRE(u);
  CAF_CHECK_EQUAL(u->host, "10.0.0.1");
  CAF_CHECK_EQUAL(u->port, 6380);
  CAF_CHECK_EQUAL(u->password, "s3cret");
  CAF_CHECK_EQUAL(u->username, "");
  CAF_CHECK_EQUAL(u->db, 2);
  u = redis::parse_url("redis://alice:p%40ss%3Aw@cache/", &error);
  CAF_REQUIRE(u);
  CAF_CHECK_EQUAL(u->username, "alice");
  CAF_CHECK_EQUAL(u->password, "p@ss:w");
  CAF_CHECK_EQUAL(u->host, "cache");
  CAF_CHECK_EQUAL(u->db, 0);
  u = redis::parse_url("redis://[::1]:7000/15", &error);
  CAF_REQUIRE(u);
  CAF_CHECK_EQUAL(u->host, "::1");
  CAF_CHECK_EQUAL(u->port, 7000);
  CAF_CHECK_EQUAL(u->db, 15);
}

CAF_TEST(parse_url names what is wrong) {
  auto reason = [](const std::string& text) {
    std::string error;
    auto u = redis::parse_url(text, &error);
    CAF_CHECK(!u);
    return error;
  };
  CAF_CHECK(contains(reason("http://localhost"), "expected redis://"));
  CAF_CHECK(contains(reason("rediss://localhost"), "TLS"));
  CAF_CHECK(contains(reason("redis://"), "missing host"));
  CAF_CHECK(contains(reason("redis://:pw@:6379"), "missing host"));
  CAF_CHECK(contains(reason("redis://h:0"), "port must be 1-65535"));
  CAF_CHECK(contains(reason("redis://h:65536"), "port must be 1-65535"));
  CAF_CHECK(contains(reason("redis://h:x1"), "port must be 1-65535"));
  CAF_CHECK(contains(reason("redis://h:"), "empty port"));
  CAF_CHECK(contains(reason("redis://h/-1"), "database must be a non-negative integer"));
  CAF_CHECK(contains(reason("redis://h/one"), "database must be a non-negative integer"));
  CAF_CHECK(contains(reason("redis://h?db=1"), "query"));
  CAF_CHECK(contains(reason("redis://user@h"), "user:password"));
  CAF_CHECK(contains(reason("redis://:p%4@h"), "percent-encoding"));
  CAF_CHECK(contains(reason("redis://::1:6379"), "brackets"));
  CAF_CHECK(contains(reason("redis://[::1"), "unterminated"));
}

CAF_TEST(connection refused names host and port) {
  auto port = test::free_loopback_port();
  redis::url_parts where;
  where.host = "127.0.0.1";
  where.port = port;
  redis::client c{where, timeout};
  CAF_CHECK(!c.connected());
  std::string error;
  auto r = c.command({"PING"}, &error);
  CAF_CHECK(!r);
  CAF_CHECK(!c.connected());
  CAF_CHECK(contains(error, "127.0.0.1:" + std::to_string(port)));
  CAF_CHECK(contains(error, "refused"));
  CAF_CHECK_EQUAL(c.last_error(), error);
  CAF_CHECK(!c.scan("*", &error));
}

CAF_TEST_FIXTURE_SCOPE(redis_server, fixture)

CAF_TEST(set get expire ttl) {
  CAF_REQUIRE_EQUAL(start_error, "");
  redis::client c{where(), timeout};
  CAF_CHECK(c.connected());
  auto ok = run(c, {"SET", "k", "v"});
  CAF_CHECK(ok.type == kind::status);
  CAF_CHECK_EQUAL(ok.str, "OK");
  auto got = run(c, {"GET", "k"});
  CAF_CHECK(got.type == kind::string);
  CAF_CHECK_EQUAL(got.str, "v");
  CAF_CHECK(run(c, {"GET", "missing"}).type == kind::nil);
  CAF_CHECK_EQUAL(run(c, {"TTL", "k"}).integer, -1);
  auto expire = run(c, {"EXPIRE", "k", "100"});
  CAF_CHECK(expire.type == kind::integer);
  CAF_CHECK_EQUAL(expire.integer, 1);
  auto ttl = run(c, {"TTL", "k"});
  CAF_CHECK(ttl.type == kind::integer);
  CAF_CHECK(ttl.integer > 0 && ttl.integer <= 100);
  CAF_CHECK_EQUAL(run(c, {"TTL", "missing"}).integer, -2);
  CAF_CHECK_EQUAL(run(c, {"INCRBY", "n", "41"}).integer, 41);
  CAF_CHECK_EQUAL(run(c, {"INCR", "n"}).integer, 42);
  run(c, {"RPUSH", "l", "a", "b", ""});
  auto list = run(c, {"LRANGE", "l", "0", "-1"});
  CAF_REQUIRE(list.type == kind::array);
  CAF_REQUIRE_EQUAL(list.elements.size(), 3u);
  CAF_CHECK_EQUAL(list.elements[0].str, "a");
  CAF_CHECK_EQUAL(list.elements[2].str, "");
  CAF_CHECK(c.connected());
}

CAF_TEST(values and keys are binary safe) {
  CAF_REQUIRE_EQUAL(start_error, "");
  redis::client c{where(), timeout};
  std::string key{"k\0\r\n ey", 8};
  std::string value;
  for (int i = 0; i < 300'000; ++i)
    value += static_cast<char>(i * 7 % 256);
  CAF_CHECK_EQUAL(run(c, {"SET", key, value}).str, "OK");
  auto got = run(c, {"GET", key});
  CAF_CHECK(got.type == kind::string);
  CAF_CHECK_EQUAL(got.str.size(), value.size());
  CAF_CHECK(got.str == value);
  CAF_CHECK(run(c, {"GET", std::string{"k\0\r\n", 4}}).type == kind::nil);
  CAF_CHECK_EQUAL(run(c, {"STRLEN", key}).integer, 300'000);
}

CAF_TEST(error replies are replies) {
  CAF_REQUIRE_EQUAL(start_error, "");
  redis::client c{where(), timeout};
  run(c, {"SET", "s", "text"});
  auto incr = run(c, {"INCR", "s"});
  CAF_CHECK(incr.type == kind::error);
  CAF_CHECK(contains(incr.str, "ERR value is not an integer"));
  auto wrong_type = run(c, {"LPUSH", "s", "x"});
  CAF_CHECK(wrong_type.type == kind::error);
  CAF_CHECK(contains(wrong_type.str, "WRONGTYPE"));
  auto unknown = run(c, {"NOSUCHCOMMAND", "x"});
  CAF_CHECK(unknown.type == kind::error);
  CAF_CHECK(contains(unknown.str, "unknown command"));
  CAF_CHECK(c.connected());
  CAF_CHECK_EQUAL(run(c, {"GET", "s"}).str, "text");
  std::string error;
  CAF_CHECK(!c.command({}, &error));
  CAF_CHECK(contains(error, "empty command"));
}

CAF_TEST(scan returns every matching key) {
  CAF_REQUIRE_EQUAL(start_error, "");
  redis::client c{where(), timeout};
  std::vector<std::string> expected;
  for (int chunk = 0; chunk < 5; ++chunk) {
    std::vector<std::string> mset{"MSET"};
    for (int i = chunk * 500; i < (chunk + 1) * 500; ++i) {
      expected.push_back("job:" + std::to_string(i));
      mset.push_back(expected.back());
      mset.push_back("x");
      mset.push_back("other:" + std::to_string(i));
      mset.push_back("y");
    }
    CAF_REQUIRE_EQUAL(run(c, mset).str, "OK");
  }
  std::string error;
  auto keys = c.scan("job:*", &error);
  CAF_REQUIRE(keys);
  CAF_CHECK_EQUAL(keys->size(), 2500u);
  std::sort(keys->begin(), keys->end());
  std::sort(expected.begin(), expected.end());
  CAF_CHECK(*keys == expected);
  auto none = c.scan("nothing:*", &error);
  CAF_REQUIRE(none);
  CAF_CHECK(none->empty());
}

CAF_TEST(a command without reply within the timeout fails) {
  CAF_REQUIRE_EQUAL(start_error, "");
  redis::client c{where(), 200ms};
  std::string error;
  CAF_CHECK(!c.command({"BLPOP", "never", "0"}, &error));
  CAF_CHECK(contains(error, "no reply within 200 ms"));
  CAF_CHECK(!c.connected());
  CAF_CHECK_EQUAL(run(c, {"PING"}).str, "PONG");
  CAF_CHECK(c.connected());
}

CAF_TEST(auth and select come from the url) {
  CAF_REQUIRE_EQUAL(start_error, "");
  redis::client admin{where(), timeout};
  CAF_REQUIRE_EQUAL(run(admin, {"ACL", "SETUSER", "alice", "on", ">s3cret", "~*", "+@all"}).str,
                    "OK");
  std::string error;
  auto alice_url = redis::parse_url(
      "redis://alice:s3cret@127.0.0.1:" + std::to_string(server->port()) + "/3", &error);
  CAF_REQUIRE(alice_url);
  redis::client alice{*alice_url, timeout};
  CAF_CHECK(alice.connected());
  CAF_CHECK_EQUAL(run(alice, {"ACL", "WHOAMI"}).str, "alice");
  CAF_CHECK_EQUAL(run(alice, {"SET", "where", "db3"}).str, "OK");
  CAF_CHECK(run(admin, {"GET", "where"}).type == kind::nil);
  redis::client db3{where(3), timeout};
  CAF_CHECK_EQUAL(run(db3, {"GET", "where"}).str, "db3");
  auto wrong = *alice_url;
  wrong.password = "wrong";
  redis::client intruder{wrong, timeout};
  CAF_CHECK(!intruder.connected());
  CAF_CHECK(!intruder.command({"PING"}, &error));
  CAF_CHECK(contains(error, "AUTH failed"));
  CAF_CHECK(contains(error, "WRONGPASS"));
  // The default user with a password: AUTH with the password alone.
  CAF_REQUIRE_EQUAL(run(admin, {"CONFIG", "SET", "requirepass", "topsecret"}).str, "OK");
  auto plain = where();
  redis::client without_password{plain, timeout};
  auto denied = run(without_password, {"GET", "x"});
  CAF_CHECK(denied.type == kind::error);
  CAF_CHECK(contains(denied.str, "NOAUTH"));
  plain.password = "topsecret";
  redis::client with_password{plain, timeout};
  CAF_CHECK_EQUAL(run(with_password, {"ACL", "WHOAMI"}).str, "default");
}

CAF_TEST(the client survives a redis restart on the same port) {
  CAF_REQUIRE_EQUAL(start_error, "");
  redis::client c{where(), timeout};
  CAF_CHECK_EQUAL(run(c, {"SET", "before", "1"}).str, "OK");
  auto port = server->port();
  server->kill9();
  CAF_CHECK(!server->running());
  std::string error;
  CAF_CHECK(!c.command({"GET", "before"}, &error));
  CAF_CHECK(!c.connected());
  CAF_CHECK(contains(error, "127.0.0.1:" + std::to_string(port)));
  CAF_CHECK(!c.command({"PING"}, &error));
  CAF_CHECK(contains(error, "refused"));
  server = test::start_redis(dir.path(), port, &start_error);
  CAF_REQUIRE_EQUAL(start_error, "");
  CAF_REQUIRE_EQUAL(server->port(), port);
  // The same client object, and a new server: nothing persisted.
  CAF_CHECK(run(c, {"GET", "before"}).type == kind::nil);
  CAF_CHECK(c.connected());
  CAF_CHECK_EQUAL(run(c, {"SET", "after", "2"}).str, "OK");
  CAF_CHECK_EQUAL(run(c, {"GET", "after"}).str, "2");
}

CAF_TEST(a stale connection is replaced without an error) {
  CAF_REQUIRE_EQUAL(start_error, "");
  redis::client c{where(), timeout};
  CAF_CHECK_EQUAL(run(c, {"SET", "before", "1"}).str, "OK");
  auto port = server->port();
  server->kill9();
  server = test::start_redis(dir.path(), port, &start_error);
  CAF_REQUIRE_EQUAL(start_error, "");
  // The old connection fails on use; the client reconnects and retries once.
  std::string error;
  auto r = c.command({"GET", "before"}, &error);
  CAF_CHECK_EQUAL(error, "");
  CAF_REQUIRE(r);
  CAF_CHECK(r->type == kind::nil);
  CAF_CHECK(c.connected());
}

CAF_TEST(writing to a dead server does not raise SIGPIPE) {
  CAF_REQUIRE_EQUAL(start_error, "");
  redis::client c{where(), timeout};
  CAF_CHECK_EQUAL(run(c, {"PING"}).str, "PONG");
  server->kill9();
  // Larger than the socket buffers: hiredis keeps writing after the reset.
  std::string error;
  CAF_CHECK(!c.command({"SET", "big", std::string(16 << 20, 'x')}, &error));
  CAF_CHECK(contains(error, "refused"));
}

CAF_TEST_FIXTURE_SCOPE_END()
