#pragma once

// Prometheus text exposition format 0.0.4: a writer for /metrics pages and
// Pushgateway bodies, and the Pushgateway grouping-key path. No I/O here.
//
// What `promtool check metrics` (Prometheus 2.42) reports, checked against the
// real binary (it reads stdin, prints problems on stderr, nothing on stdout).
// Parse errors (exit 1), which the writer never produces:
//   - a second HELP or TYPE line for a name, or TYPE after its samples;
//   - escapes other than \\ \" \n in label values (\\ \n in HELP);
//   - a missing final newline.
// Lint problems (exit 3, "<name> <problem>" per line), the caller's job:
//   - "no help text": every family needs a non-empty HELP;
//   - counters must end in "_total", nothing else may;
//   - only histograms may end in "_bucket" or carry an "le" label; only
//     histograms and summaries may end in "_count" or "_sum"; only summaries
//     may carry a "quantile" label;
//   - no "_counter", "_gauge", "_histogram", "_summary" as a later name
//     segment (inside "_x_" or as the suffix);
//   - no ':' in metric names (reserved for recording rules);
//   - no camelCase (a lower-case letter followed by an upper-case one) in
//     metric or label names;
//   - base units anywhere in the name: "seconds", not milli/micro/nanoseconds,
//     minutes, hours, days, weeks; "bytes", not bits, kilo/mega/gigabytes,
//     kibibytes...; "meters", not kilo/millimeters, inches, miles; "grams",
//     not kilo/milligrams; "celsius", not fahrenheit;
//   - no abbreviated unit as a later segment: s ms us ns sec b kb mb gb tb pb
//     m h d (so "duration_seconds", never "duration_ms").
// It does not report duplicate series, a family whose samples are split by
// another family, or reserved "__" label names; the writer still refuses the
// last two, as the format requires.

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace troupe::prom {

/// Label pairs in the order they are written.
using labels = std::vector<std::pair<std::string, std::string>>;

/// [a-zA-Z_:][a-zA-Z0-9_:]*
bool valid_metric_name(std::string_view name);

/// [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved).
bool valid_label_name(std::string_view name);

/// A valid metric name for `name`: characters outside [a-zA-Z0-9_:] become
/// '_', a leading digit gets a '_' in front, empty becomes "_".
std::string sanitize_name(std::string_view name);

/// Label value escaping: \ → \\, " → \", newline → \n.
std::string escape_label_value(std::string_view value);

/// HELP text escaping: \ → \\, newline → \n.
std::string escape_help(std::string_view help);

/// A sample value as Go's strconv.FormatFloat(v, 'g', -1, 64) writes it
/// (shortest round-trip; exponent form below 1e-4 and from 1e6 up, e.g.
/// "0.005", "1.5e-07", "1.2345675e+06"), except that integral values below
/// 1e15 in magnitude are written as plain integers ("1234567", not
/// "1.234567e+06"). Non-finite: "NaN", "+Inf", "-Inf".
std::string format_value(double value);

/// Builds one exposition. Every sample belongs to the family declared last,
/// so each family is one group. A call that would produce an invalid
/// exposition writes nothing and records the first such problem in error();
/// the writer never throws.
class writer {
public:
  /// Starts a family: its # HELP and # TYPE lines. `type` is one of counter,
  /// gauge, histogram, summary, untyped; each name may start a family once.
  void family(std::string_view name, std::string_view type, std::string_view help);

  /// One sample of the current family. `name` is the family name, or for a
  /// histogram/summary the family name plus "_bucket" (histogram only),
  /// "_sum" or "_count". Label names must be valid and distinct.
  void sample(std::string_view name, const labels& l, double value);

  /// A whole histogram series of the current (histogram) family `name`.
  /// `bucket_counts[i]` is the NON-cumulative number of observations in
  /// (upper_bounds[i-1], upper_bounds[i]]; the writer accumulates them.
  /// Observations above the last bound are `count` minus their sum. Writes
  /// name_bucket{le=...} per bound (cumulative), le="+Inf" = count, name_sum
  /// and name_count. Bounds must be finite and strictly increasing, the
  /// vectors of equal size, the bucket total at most `count`, and `l` must
  /// not contain "le".
  void histogram(std::string_view name, const labels& l, const std::vector<double>& upper_bounds,
                 const std::vector<uint64_t>& bucket_counts, double sum, uint64_t count);

  /// The exposition so far.
  const std::string& text() const { return text_; }

  /// Hands out the exposition and resets the writer (families and error too).
  std::string take();

  /// The first refused call, empty if none.
  const std::string& error() const { return error_; }

private:
  bool fail(std::string message);
  bool check_sample(std::string_view name, const labels& l, bool histogram_call);
  void write_sample(std::string_view name, const labels& l, std::string_view extra_label,
                    std::string_view extra_value, std::string_view value);

  std::string text_;
  std::string error_;
  std::set<std::string, std::less<>> families_;
  std::string current_;      ///< name of the family declared last
  std::string current_type_; ///< its type
};

/// The Pushgateway path for a grouping key:
/// "/metrics/job/<job>{/<label>/<value>}". A job or value that is empty,
/// contains '/', or is "." or ".." uses the "<label>@base64/<value>" form
/// (RFC 4648 §5 URL-safe alphabet with padding; empty encodes as "="); other
/// values are percent-encoded as a path segment (RFC 3986 unreserved
/// characters stay). Label names in `grouping` must be valid label names.
std::string pushgateway_path(std::string_view job, const labels& grouping);

} // namespace troupe::prom
