#!/usr/bin/env bash
# Jobs benchmark: submit N `/bin/true` jobs over HTTP at jobs.concurrency =
# cores and wait for all to finish (persistence and log capture on, as
# always); in the same run, time a shell loop spawning /bin/true N times.
# Prints jobs/s, the ratio to the loop and submit→start latency p50/p99.
# It reports; it asserts no speed.
#
#   benchmarks/jobs.sh <build-dir>
#
# Environment: BENCH_JOBS (default 2000).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

build="$(cd "${1:?usage: $0 <build-dir>}" && pwd)"
troupe_bin="$build/troupe"
driver="$build/benchmarks/jobs_bench"
[[ -x "$troupe_bin" ]] || { echo "jobs: $troupe_bin not found (build it first)" >&2; exit 2; }
[[ -x "$driver" ]] || { echo "jobs: $driver not found (cmake --build $build --target jobs_bench)" >&2; exit 2; }
jobs="${BENCH_JOBS:-2000}"
cores="$(nproc)"

work="$(mktemp -d "${TMPDIR:-/tmp}/troupe-bench-jobs.XXXXXX")"
pid=""
cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cd "$work"
TROUPE_JOBS__CONCURRENCY="$cores" "$troupe_bin" serve --listen 127.0.0.1:0 --proxy-listen 127.0.0.1:0 \
  --data-dir "$work/data" --log-level info >"$work/troupe.log" 2>&1 &
pid=$!
port="$(wait_troupe_port "$work/troupe.log" "$pid")"

echo "jobs: $jobs x /bin/true, jobs.concurrency=$cores, $cores submitting connections"
# The first start writes the API token right after binding.
for _ in $(seq 200); do [[ -s "$work/data/token" ]] && break; sleep 0.05; done
result="$(TROUPE_BENCH_TOKEN="$(cat "$work/data/token")" "$driver" 127.0.0.1 "$port" "$jobs" "$cores" /bin/true)"
echo "troupe: $result"

start=$(date +%s.%N)
for ((i = 0; i < jobs; i++)); do /bin/true; done
end=$(date +%s.%N)
loop_rate=$(awk -v n="$jobs" -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", n / (b - a) }')
echo "shell loop: $jobs x /bin/true in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')s = $loop_rate spawns/s"

troupe_rate=$(sed -n 's/.*jobs_per_s=\([0-9.]*\).*/\1/p' <<<"$result")
p50=$(sed -n 's/.*start_latency_p50_ms=\([0-9.]*\).*/\1/p' <<<"$result")
p99=$(sed -n 's/.*start_latency_p99_ms=\([0-9.]*\).*/\1/p' <<<"$result")
ratio=$(awk -v a="$troupe_rate" -v b="$loop_rate" 'BEGIN { printf "%.2f", a / b }')
echo "ratio troupe/loop: $ratio"
echo "RESULT jobs n=$jobs troupe_jobs_per_s=$troupe_rate loop_per_s=$loop_rate ratio=$ratio start_p50_ms=$p50 start_p99_ms=$p99"
