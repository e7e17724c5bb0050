#pragma once

// How log lines show to live readers, in one place: GET /logs's JSON (also
// its follow stream) and a job stream's JSON. The router renders a committed
// batch once per shape (render_committed); replays from the store render the
// same shapes from the stored lines.

#include <cstdint>
#include <string>
#include <string_view>

#include "actors/interfaces.hpp"
#include "persistence/logs.hpp"

namespace troupe {

/// A line as GET /logs shows it: {"seq","ts","ts_ns","line","stream","level",
/// "labels",…} (`s.seq` is the global seq).
std::string log_line_json(const persistence::stored_line& s, const log_labels& labels);

/// A job's line as its SSE stream shows it (`job_seq` is the job's seq):
/// {"seq","ts","stream","line"} plus the seed clients' {"type":"log","data"}.
std::string job_line_json(uint64_t job_seq, int64_t ts_ns, uint8_t stream, std::string_view line);

/// Renders a committed log_append op (persistence::log_op_builder) whose
/// first line got global seq `first_seq` and index seq `first_index_seq`:
/// GET /logs's JSON when `for_logs`, the job stream's when `for_index`.
log_committed render_committed(std::string_view op, uint64_t first_seq, std::string index,
                               uint64_t first_index_seq, bool for_logs, bool for_index);

} // namespace troupe
