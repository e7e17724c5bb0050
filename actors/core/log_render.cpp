#include "actors/core/log_render.hpp"

#include "persistence/jobs.hpp"
#include "runtime/ground/json_text.hpp"

namespace troupe {

std::string log_line_json(const persistence::stored_line& s, const log_labels& labels) {
  std::string out;
  out.reserve(256 + s.line.size());
  persistence::append_api_json(out, s, labels);
  return out;
}

std::string job_line_json(uint64_t job_seq, int64_t ts_ns, uint8_t stream, std::string_view line) {
  persistence::stored_line s;
  s.ts_ns = ts_ns;
  s.stream = stream;
  s.line = line;
  std::string out;
  out.reserve(128 + 2 * line.size());
  persistence::append_api_json(out, job_seq, s);
  // Seed clients read {"type":"log","data":"...\n"}; both shapes in one.
  out.pop_back();
  out += ",\"type\":\"log\",\"data\":";
  std::string with_newline{line};
  with_newline += '\n';
  append_json_string(out, with_newline);
  out += '}';
  return out;
}

log_committed render_committed(std::string_view op, uint64_t first_seq, std::string index,
                               uint64_t first_index_seq, bool for_logs, bool for_index) {
  log_committed out;
  out.first_seq = first_seq;
  out.index = std::move(index);
  out.first_index_seq = first_index_seq;
  bool labelled = false;
  persistence::visit_log_op(
      op, first_seq, [&](const persistence::stored_line& s, const log_labels& l) {
        if (!labelled) {
          out.labels = l;
          labelled = true;
        }
        out.ts_ns.push_back(s.ts_ns);
        out.levels.emplace_back(s.level);
        if (for_logs)
          out.log_json.push_back(log_line_json(s, l));
        if (for_index)
          out.index_json.push_back(
              job_line_json(first_index_seq + (s.seq - first_seq), s.ts_ns, s.stream, s.line));
      });
  return out;
}

} // namespace troupe
