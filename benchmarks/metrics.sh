#!/usr/bin/env bash
# Windowed-percentile benchmark: the data structures behind per-series
# latency windows, on synthetic data, no server. In one run: (a) sketch
# inserts of lognormal latencies, ns per insert; (b) a window_ring fed one
# hour of samples at synthetic timestamps: the 1h p99 query against
# std::nth_element over a copy of the same samples (the exact answer), the
# speedup and the sketch's relative error; (c) memory of an idle series, a
# busy one (the hour above), and the busy one after two quiet hours.
# It reports; it asserts no speed.
#
#   benchmarks/metrics.sh <build-dir>
#
# Environment: BENCH_INSERTS (default 10000000), BENCH_SAMPLES_PER_S
# (default 1000; the hour holds 3600 times as many).
set -euo pipefail

build="$(cd "${1:?usage: $0 <build-dir>}" && pwd)"
driver="$build/benchmarks/metrics_bench"
[[ -x "$driver" ]] || { echo "metrics: $driver not found (cmake --build $build --target metrics_bench)" >&2; exit 2; }
inserts="${BENCH_INSERTS:-10000000}"
per_s="${BENCH_SAMPLES_PER_S:-1000}"

out="$("$driver" "$inserts" "$per_s")"
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$out"; }

samples=$(field samples)
echo "metrics: $inserts sketch inserts; one hour of $per_s samples/s ($samples samples) into a window_ring"
echo "(a) sketch insert: $(field insert_ns) ns/insert (window_ring add, 4 sketches: $(field ring_add_ns) ns)"
echo "(b) 1h p99: sketch query $(field p99_query_us) us (median of 31), nth_element on a copy $(field nth_element_ms) ms (median of 5): $(field speedup)x faster"
echo "    p99 exact $(field p99_exact_ms) ms, sketch $(field p99_sketch_ms) ms: relative error $(field p99_error_pct) %"
idle=$(field idle_bytes)
busy=$(field busy_bytes)
quiet=$(field quiet_bytes)
echo "(c) memory per series: idle $idle bytes, busy $busy bytes, busy then quiet 2 h $quiet bytes" \
  "(10,000 busy series: $(awk -v b="$busy" 'BEGIN { printf "%.0f", b * 10000 / 1048576 }') MiB)"
echo "RESULT metrics inserts=$inserts insert_ns=$(field insert_ns) ring_add_ns=$(field ring_add_ns) samples=$samples p99_query_us=$(field p99_query_us) nth_element_ms=$(field nth_element_ms) speedup=$(field speedup) p99_error_pct=$(field p99_error_pct) idle_bytes=$idle busy_bytes=$busy quiet_bytes=$quiet"
