#include "http/api/context.hpp"

#include <exception>
#include <string>
#include <utility>

#include "actors/core/reader_pool.hpp"

namespace troupe {

void run_read(const node_context& ctx, const http::exchange_ptr& ex,
              std::function<http::response()> read) {
  if (!ctx.readers) {
    ex->reply(http::response::error(503, "unavailable", "the node is not serving reads"));
    return;
  }
  auto answer = [ex, read = std::move(read)] {
    http::response res;
    try {
      res = read();
    } catch (const std::exception& e) {
      res = http::response::error(500, "store_failure", e.what());
    }
    ex->reply(std::move(res));
  };
  if (ctx.readers->submit(std::move(answer), ex->req().request_id))
    return;
  auto res = http::response::error(503, "busy",
                                   "too many reads in progress (" +
                                       std::to_string(ctx.readers->capacity()) +
                                       ", http.read_queue); retry shortly");
  res.headers.emplace_back("Retry-After", "1");
  ex->reply(std::move(res));
}

} // namespace troupe
