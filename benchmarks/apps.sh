#!/usr/bin/env bash
# Apps benchmark, three parts, each against its floor in the same run:
#
# 1. Start-to-ready: `up` of an app with BENCH_APP_INSTANCES (20) instances of
#    the test backend (readiness probe on /healthz every 1 s) until all are
#    ready, against a shell loop that starts the same processes and polls
#    each one's /healthz with curl until it answers (the floor). Ratio.
# 2. Crash-to-ready: `kill -9` of one instance until it is ready again
#    (includes the first restart backoff, apps.restart_backoff_initial, 1 s
#    by default — what users get).
# 3. Scale: BENCH_SCALE_INSTANCES (500) instances with 1 s health checks
#    (readiness and liveness: two probes per instance per second). troupe's
#    CPU over BENCH_SCALE_SECONDS (20) of steady state per instance and per
#    probe, and its anonymous memory per instance (actors and bookkeeping;
#    the instances' own processes excluded).
# Time is read with curl polls every 10 ms on both sides. It reports; it
# asserts no speed.
#
#   benchmarks/apps.sh <build-dir>
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

build="$(cd "${1:?usage: $0 <build-dir>}" && pwd)"
troupe_bin="$build/troupe"
backend="$build/tests/troupe-test-backend"
[[ -x "$troupe_bin" ]] || { echo "apps: $troupe_bin not found (build it first)" >&2; exit 2; }
[[ -x "$backend" ]] || { echo "apps: $backend not found (build it first)" >&2; exit 2; }
n="${BENCH_APP_INSTANCES:-20}"
scale_n="${BENCH_SCALE_INSTANCES:-500}"
scale_seconds="${BENCH_SCALE_SECONDS:-20}"

work="$(mktemp -d "${TMPDIR:-/tmp}/troupe-bench-apps.XXXXXX")"
pid=""
loop_pids=()
cleanup() {
  for p in "${loop_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT


cd "$work"
TROUPE_AUTH__MODE=none TROUPE_APPS__MAX_INSTANCES=$((scale_n + 10)) \
  "$troupe_bin" serve --listen 127.0.0.1:0 --proxy-listen 127.0.0.1:0 --data-dir "$work/data" --log-level info \
  >"$work/troupe.log" 2>&1 &
pid=$!
port="$(wait_troupe_port "$work/troupe.log" "$pid")"
api="http://127.0.0.1:$port"

spec() { # name replicas
  cat <<EOF
{"apiVersion":"v1","kind":"App","metadata":{"name":"$1"},
 "spec":{"type":"http","command":["$backend"],"args":["--port","\$PORT"],
  "ports":[{"containerPort":8080}],
  "health":{"httpGet":{"path":"/healthz"},"intervalSeconds":1,"timeoutSeconds":1,"failureThreshold":3},
  "scaling":{"minReplicas":1,"maxReplicas":$2,"replicas":$2},
  "termination":{"drainSeconds":1,"gracePeriodSeconds":5}}}
EOF
}

ready_of() { # app -> ready count (GET /apps lists no instances)
  curl -sf "$api/apps" | grep -o "\"name\":\"$1\",\"ready\":[0-9]*" | sed 's/.*://'
}

wait_ready() { # app count
  until [[ "$(ready_of "$1")" == "$2" ]]; do sleep 0.01; done
}

up_timed() { # app count -> seconds from `up` to all ready
  curl -sf -XPOST -H 'Content-Type: application/json' --data-binary "$(spec "$1" "$2")" \
    "$api/apps/register" >/dev/null
  local t0 t1
  t0=$(now)
  curl -sf -XPOST "$api/apps/$1/up" >/dev/null
  wait_ready "$1" "$2"
  t1=$(now)
  elapsed "$t0" "$t1"
}

# --- 1. start-to-ready --------------------------------------------------------
troupe_start=$(up_timed start "$n")
echo "troupe: up of $n instances to all ready in ${troupe_start}s"

# The floor: the same processes from a shell loop, each polled until healthy
# (each picks a free port and says which on its first line, as troupe's
# allocator hands out free ones).
t0=$(now)
for ((i = 0; i < n; i++)); do
  "$backend" --port 0 >"$work/loop-$i.out" 2>&1 &
  loop_pids+=($!)
done
for ((i = 0; i < n; i++)); do
  lport=""
  until [[ -n "$lport" ]]; do
    lport="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/loop-$i.out")"
    [[ -n "$lport" ]] || sleep 0.01
  done
  until curl -sf "http://127.0.0.1:$lport/healthz" >/dev/null; do sleep 0.01; done
done
t1=$(now)
loop_start=$(elapsed "$t0" "$t1")
for p in "${loop_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${loop_pids[@]}"; do wait "$p" 2>/dev/null || true; done
loop_pids=()
echo "shell loop: $n processes to all healthy in ${loop_start}s"
start_ratio=$(awk -v a="$troupe_start" -v b="$loop_start" 'BEGIN { printf "%.2f", a / b }')
echo "ratio troupe/loop (time, lower is better): $start_ratio"

# --- 2. crash-to-ready --------------------------------------------------------
victim=$(curl -sf "$api/apps/start/status" | grep -o '"pid":[0-9]*' | head -1 | sed 's/.*://')
t0=$(now)
kill -KILL "$victim"
# Not ready any more (the exit is seen), then ready again.
until [[ "$(ready_of start)" != "$n" ]]; do sleep 0.01; done
wait_ready start "$n"
t1=$(now)
crash=$(elapsed "$t0" "$t1")
echo "troupe: kill -9 of one instance to ready again in ${crash}s (1 s restart backoff included)"
pids=$(curl -sf "$api/apps/start/status" | grep -o '"pid":[0-9]*' | sed 's/.*://')
curl -sf -XDELETE "$api/apps/start" >/dev/null

# --- 3. scale -------------------------------------------------------------------
anon_kb() { sed -n 's/^RssAnon:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$pid/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
# Until the first app's processes are gone (they drain after DELETE).
for p in $pids; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done
mem_before=$(anon_kb)
echo "troupe: up of $scale_n instances to all ready in $(up_timed scale "$scale_n")s"
ticks0=$(cpu_ticks)
s0=$(now)
sleep "$scale_seconds"
ticks1=$(cpu_ticks)
s1=$(now)
mem_after=$(anon_kb)
secs=$(elapsed "$s0" "$s1")
cpu_pct=$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.1f", 100 * (b - a) / hz / s }')
per_instance=$(awk -v p="$cpu_pct" -v n="$scale_n" 'BEGIN { printf "%.4f", p / n }')
per_probe_us=$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$hz" -v s="$secs" -v n="$scale_n" \
  'BEGIN { printf "%.1f", 1e6 * (b - a) / hz / (s * n * 2) }')
mem_per=$(awk -v a="$mem_before" -v b="$mem_after" -v n="$scale_n" 'BEGIN { printf "%.1f", (b - a) / n }')
echo "troupe: $scale_n instances, 1 s checks: ${cpu_pct}% of a core = ${per_instance}% per instance," \
  "${per_probe_us} us CPU per probe; +${mem_per} KiB anonymous memory per instance"
curl -sf -XPOST "$api/apps/scale/down" >/dev/null
echo "RESULT apps n=$n start_s=$troupe_start loop_s=$loop_start ratio=$start_ratio crash_to_ready_s=$crash" \
  "scale_n=$scale_n cpu_pct=$cpu_pct cpu_pct_per_instance=$per_instance cpu_us_per_probe=$per_probe_us" \
  "kib_per_instance=$mem_per"
