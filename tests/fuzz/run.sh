#!/usr/bin/env bash
# Runs libFuzzer targets on a copy of their seed corpus and prints, per target,
# executions, coverage and seconds; exits non-zero if any target failed.
# Usage: tests/fuzz/run.sh BUILD_DIR SECONDS JOBS [TARGET...]
# With MERGE=1 it instead merges what BUILD_DIR/corpus found into the seeds.
set -u
build=${1:?build dir}
seconds=${2:-60}
jobs=${3:-1}
shift 3 || true
src=$(cd "$(dirname "$0")" && pwd)
bin="$build/tests/fuzz"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_request fuzz_multipart fuzz_job_spec fuzz_config
  fuzz_archive fuzz_encoders)

mkdir -p "$build/corpus" "$build/artifacts" "$build/logs"
failed=()
summary=()
for t in "${targets[@]}"; do
  seeds="$src/corpus/$t"
  work="$build/corpus/$t"
  mkdir -p "$work"
  if [ "${MERGE:-0}" = 1 ]; then
    # Keeps only inputs that add coverage to what the seeds already reach.
    before=$(ls "$seeds" | wc -l)
    "$bin/$t" -merge=1 "$seeds" "$work" > "$build/logs/$t.merge.log" 2>&1 \
      || { echo "$t: merge failed, see $build/logs/$t.merge.log"; failed+=("$t"); }
    summary+=("$t: $(( $(ls "$seeds" | wc -l) - before )) files added to $seeds")
    continue
  fi
  cp -n "$seeds"/* "$work"/ 2>/dev/null
  dict=()
  [ -f "$src/$t.dict" ] && dict=(-dict="$src/$t.dict")
  par=()
  [ "$jobs" -gt 1 ] && par=(-fork="$jobs")
  log="$build/logs/$t.log"
  start=$(date +%s)
  cpu_before=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
  # libFuzzer's own limits: 10 s per input, 2 GiB of memory.
  "$bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$t-" "${dict[@]}" "${par[@]}" "$work" > "$log" 2>&1
  rc=$?
  cpu_after=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
  wall=$(( $(date +%s) - start ))
  cpu=$(( (cpu_after - cpu_before) / $(getconf CLK_TCK) ))
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
  [ "$execs" = 0 ] && execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  line=$(printf '%-16s execs: %-10s cov: %-6s seconds: %-5s cpu seconds: %s' "$t" "${execs:-0}" \
    "${cov:-?}" "$wall" "$cpu")
  if [ $rc -ne 0 ]; then
    line="$line  FAILED (exit $rc), see $log"
    failed+=("$t")
    grep -A30 -m1 -E '^==[0-9]+==ERROR|fuzz check failed|runtime error|deadly signal' "$log" | head -40
  fi
  echo "$line"
  summary+=("$line")
done
echo "--- summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]} (inputs in $build/artifacts)"
  exit 1
fi
