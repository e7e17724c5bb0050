#!/usr/bin/env bash
# Runs every benchmark script in benchmarks/ (everything named *.sh except this
# file) against a build directory, and exits non-zero if any of them fails.
# Benchmarks report numbers; they never assert speed.
#
#   benchmarks/run.sh <build-dir>          (what `make bench` runs)
#
# Environment knobs are passed through to the scripts, e.g. BENCH_DURATION=3s.
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $# -lt 1 ]]; then
  echo "usage: $0 <build-dir>" >&2
  exit 2
fi
build="$(cd "$1" 2>/dev/null && pwd)" || { echo "run.sh: no such build dir: $1" >&2; exit 2; }

# A signal to this script stops the running benchmark too (its EXIT trap then
# stops the servers it started).
child=""
stop() {
  [[ -n "$child" ]] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM

failed=()
ran=0
for script in "$here"/*.sh; do
  [[ "$(basename "$script")" == "run.sh" ]] && continue
  name="$(basename "$script" .sh)"
  ran=$((ran + 1))
  echo "=== benchmark: $name"
  bash "$script" "$build" &
  child=$!
  rc=0
  wait "$child" || rc=$?
  child=""
  if [[ $rc -eq 0 ]]; then
    echo "=== $name: done"
  else
    echo "=== $name: FAILED (exit $rc)" >&2
    failed+=("$name")
  fi
  echo
done

if [[ $ran -eq 0 ]]; then
  echo "run.sh: no benchmark scripts found in $here" >&2
  exit 1
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "benchmarks failed: ${failed[*]}" >&2
  exit 1
fi
echo "all $ran benchmark(s) completed"
