#include "actors/jobs/log_download.hpp"

#include <caf/typed_event_based_actor.hpp>

#include "actors/jobs/job_stream.hpp"
#include "persistence/jobs.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

using self_ptr = log_download_actor::stateful_pointer<log_download_state>;

/// Lines per page at most; a page is one chunk of the response.
constexpr size_t download_page = 2048;

/// A line as the download shows it: raw bytes (no SSE event), one line each.
replay_item download_item(uint64_t seq, const persistence::stored_line& s, bool ndjson) {
  replay_item item{seq, {}, {}};
  if (ndjson)
    persistence::append_api_json(item.data, seq, s);
  else
    item.data.assign(s.line);
  item.data += '\n';
  return item;
}

} // namespace

log_download_actor::behavior_type log_download(self_ptr self,
                                               std::shared_ptr<persistence::lmdb_env> env,
                                               std::string job_id,
                                               std::shared_ptr<http::sse_stream> out, bool ndjson) {
  auto& st = self->state;
  st.job_id = job_id;
  auto lines = job_log_reader(
      env, job_id, [ndjson](uint64_t seq, const auto& s) { return download_item(seq, s, ndjson); });
  // A store failure after the status line went out: all that is left is to
  // cut the body short, which the client sees as an incomplete response.
  auto read = [lines, out, job_id](uint64_t after, replay_fill& fill) {
    try {
      return lines(after, fill);
    } catch (const std::exception& e) {
      logging::get("http")->error("reading the log of job {}: {}", job_id, e.what());
      out->abort();
      throw;
    }
  };
  st.follow = replay_follow{out, download_page, read};
  st.follow.hold();
  self->send(self, replay_atom::value);
  return {
      [self](replay_atom) {
        auto& st = self->state;
        std::string chunk;
        auto done = st.follow.step(self, [&chunk](const replay_item& item) {
          chunk += item.data;
          return true;
        });
        if (self->getf(caf::abstract_actor::is_terminated_flag))
          return;
        if (!st.follow.stream().write(chunk) || done) {
          st.follow.stream().close();
          self->quit();
        }
      },
  };
}

} // namespace troupe
