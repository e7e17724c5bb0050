#include "actors/jobs/log_download.hpp"

#include "actors/core/replay_pacing.hpp"
#include "persistence/jobs.hpp"
#include "persistence/logs.hpp"
#include "runtime/ground/logging.hpp"

namespace troupe {

namespace {

/// Lines per page at most; a page is one chunk of the response.
constexpr size_t download_page = 2048;

} // namespace

/// Writes a job's stored log to a chunked response a page at a time, paced
/// like SSE replays (replay_pacing.hpp): what is queued for the client stays
/// under half of http.sse_queue_bytes however long the log or its lines, and
/// the io thread never reads LMDB.
caf::behavior log_download(caf::stateful_actor<log_download_state>* self,
                           std::shared_ptr<persistence::lmdb_env> env, std::string job_id,
                           std::shared_ptr<http::sse_stream> out, bool ndjson) {
  auto& st = self->state;
  st.env = std::move(env);
  st.job_id = std::move(job_id);
  st.out = std::move(out);
  st.ndjson = ndjson;
  self->send(self, replay_atom::value);
  return {
      [self](replay_atom) {
        auto& st = self->state;
        // A chunk holds at most download_page lines and half the stream's byte
        // capacity, and waits while the client is behind.
        auto budget = next_replay_page(self, *st.out, download_page);
        if (!budget)
          return;
        std::string chunk;
        replay_fill fill{budget};
        bool refused = false;
        auto from = st.after;
        try {
          st.after = persistence::read_log_lines_until(
              *st.env, st.job_id, from, budget.events,
              [&](uint64_t seq, const persistence::stored_line& s) {
                auto before = chunk.size();
                if (st.ndjson)
                  persistence::append_api_json(chunk, seq, s);
                else
                  chunk += s.line;
                chunk += '\n';
                if (!fill.take(chunk.size() - before)) {
                  chunk.resize(before);
                  refused = true;
                  return false;
                }
                return true;
              });
        } catch (const std::exception& e) {
          // The status line is out: all that is left is to cut the body short,
          // which the client sees as an incomplete chunked response.
          logging::get("http")->error("reading the log of job {}: {}", st.job_id, e.what());
          st.out->abort();
          self->quit();
          return;
        }
        // Done once a page fell short of its seq range (gaps the log
        // retention left do not end it early).
        if (!st.out->write(chunk) || (!refused && st.after < from + budget.events)) {
          st.out->close();
          self->quit();
          return;
        }
        self->send(self, replay_atom::value);
      },
  };
}

} // namespace troupe
