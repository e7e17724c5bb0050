#!/usr/bin/env bash
# Autoscaling benchmark (issue 14), two parts, each against its floor in the
# same run:
#
# 1. Cold start: the first request to an app at zero replicas (minReplicas 0,
#    held by the built-in proxy while one instance starts), curl's total time,
#    against the instance's own start-to-ready time: a shell loop that starts
#    the same test backend and polls its /healthz without pause (bash's
#    /dev/tcp) until it answers, plus the same request sent to it directly
#    with curl (the floor). Reported: the added
#    latency (troupe - floor, ms; the target is <= 50 ms) and the ratio, the
#    median of BENCH_COLD_ROUNDS (5) rounds; between rounds the app goes back
#    to zero by itself (idleSeconds 1).
# 2. Reaction: a load step (wrk, 4 connections on /slow?ms=20: about 200
#    requests per second against targetRPSPerReplica 20) on an app at 1
#    replica (max 3); the time until 3 are ready, as a multiple of
#    windowSeconds + the instance's start-to-ready time (the floor of part 1):
#    the hysteresis window must pass, then instances start. For
#    windowSeconds 2 and 5 (evaluationSeconds 1, cooldownSeconds 1).
# It reports; it asserts no speed.
#
#   benchmarks/autoscale.sh <build-dir>
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

build="$(cd "${1:?usage: $0 <build-dir>}" && pwd)"
troupe_bin="$build/troupe"
backend="$build/tests/troupe-test-backend"
[[ -x "$troupe_bin" ]] || { echo "autoscale: $troupe_bin not found (build it first)" >&2; exit 2; }
[[ -x "$backend" ]] || { echo "autoscale: $backend not found (build it first)" >&2; exit 2; }
for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "autoscale: $tool not found" >&2; exit 2; }
done
rounds="${BENCH_COLD_ROUNDS:-5}"

work="$(mktemp -d "${TMPDIR:-/tmp}/troupe-bench-autoscale.XXXXXX")"
pid=""
loop_pid=""
wrk_pid=""
cleanup() {
  [[ -n "$wrk_pid" ]] && kill -KILL "$wrk_pid" 2>/dev/null || true
  [[ -n "$loop_pid" ]] && kill -KILL "$loop_pid" 2>/dev/null || true
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

healthy() { # port: GET /healthz answers 200 (bash's /dev/tcp)
  (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 &&
    IFS= read -r line <&3 && [[ "$line" == *" 200 "* ]]) 2>/dev/null
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

cd "$work"
TROUPE_AUTH__MODE=none "$troupe_bin" serve --listen 127.0.0.1:0 --proxy-listen 127.0.0.1:0 \
  --data-dir "$work/data" --log-level info >"$work/troupe.log" 2>&1 &
pid=$!
port="$(wait_troupe_port "$work/troupe.log" "$pid")"
api="http://127.0.0.1:$port"
proxy=""
until [[ -n "$proxy" ]]; do
  proxy="$(sed -n 's/.*proxy listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/troupe.log" | head -1)"
  [[ -n "$proxy" ]] || sleep 0.01
done

register_up() { # spec-json name
  curl -sf -XPOST -H 'Content-Type: application/json' --data-binary "$1" "$api/apps/register" >/dev/null
  curl -sf -XPOST "$api/apps/$2/up" >/dev/null
}

field_of() { # app desired|ready -> the number GET /apps lists (sorted keys: desired, name, ready)
  local row
  row="$(curl -sf "$api/apps" | grep -o "\"desired\":[0-9]*,\"name\":\"$1\",\"ready\":[0-9]*")" || true
  case "$2" in
  desired) row="${row#*\"desired\":}" && echo "${row%%,*}" ;;
  ready) echo "${row##*:}" ;;
  esac
}

# --- 1. cold start -------------------------------------------------------------
cat >"$work/cold.json" <<EOF
{"apiVersion":"v1","kind":"App","metadata":{"name":"cold"},
 "spec":{"type":"http","command":["$backend"],"args":["--port","\$PORT"],
  "ports":[{"containerPort":8080}],
  "health":{"httpGet":{"path":"/healthz"},"intervalSeconds":1,"timeoutSeconds":1,"failureThreshold":3},
  "scaling":{"minReplicas":0,"maxReplicas":1,"replicas":0,
   "policy":{"mode":"auto","evaluationSeconds":1,"cooldownSeconds":1,"idleSeconds":1,
    "http":{"targetRPSPerReplica":1000,"windowSeconds":1}}},
  "termination":{"drainSeconds":1,"gracePeriodSeconds":5}}}
EOF
register_up "$(cat "$work/cold.json")" cold

cold_times=()
floor_times=()
for ((r = 0; r < rounds; r++)); do
  # At zero: desired 0 and no instance with a process left.
  until [[ "$(field_of cold desired)" == "0" ]] &&
    ! curl -sf "$api/apps/cold/status" | grep -q '"pid":[0-9]'; do
    sleep 0.01
  done
  t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' "http://127.0.0.1:$proxy/cold/")
  [[ "${t%% *}" == 200 ]] || { echo "autoscale: cold request answered ${t%% *}" >&2; exit 1; }
  cold_times+=("${t#* }")

  # The floor: the same process from a shell, polled until healthy (bash's
  # own /dev/tcp, no process per poll, no sleep), then asked with curl as
  # troupe was.
  lport=$(free_port)
  t0=$(now)
  "$backend" --port "$lport" >"$work/loop.out" 2>&1 &
  loop_pid=$!
  until healthy "$lport"; do :; done
  t1=$(now)
  t=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$lport/")
  floor_times+=("$(awk -v a="$(elapsed "$t0" "$t1")" -v b="$t" 'BEGIN { printf "%.6f", a + b }')")
  kill -TERM "$loop_pid" 2>/dev/null || true
  wait "$loop_pid" 2>/dev/null || true
  loop_pid=""
done
cold=$(printf '%s\n' "${cold_times[@]}" | median)
floor=$(printf '%s\n' "${floor_times[@]}" | median)
echo "troupe: first request to an app at zero answered in ${cold}s (median of $rounds: ${cold_times[*]})"
echo "shell loop: start, healthy, answered in ${floor}s (median of $rounds: ${floor_times[*]})"
awk -v a="$cold" -v b="$floor" 'BEGIN {
  printf "cold-start overhead: %.1f ms over the instance'"'"'s own start-to-ready (target <= 50 ms)\n", (a - b) * 1000
  printf "ratio troupe/loop (time, lower is better): %.2f\n", a / b }'

# --- 2. reaction to a load step --------------------------------------------------
react() { # windowSeconds
  local w="$1" name="react$1"
  register_up "$(cat <<EOF
{"apiVersion":"v1","kind":"App","metadata":{"name":"$name"},
 "spec":{"type":"http","command":["$backend"],"args":["--port","\$PORT"],
  "ports":[{"containerPort":8080}],
  "health":{"httpGet":{"path":"/healthz"},"intervalSeconds":1,"timeoutSeconds":1,"failureThreshold":3},
  "scaling":{"minReplicas":1,"maxReplicas":3,"replicas":1,
   "policy":{"mode":"auto","evaluationSeconds":1,"cooldownSeconds":1,
    "http":{"targetRPSPerReplica":20,"windowSeconds":$w}}},
  "termination":{"drainSeconds":1,"gracePeriodSeconds":5}}}
EOF
)" "$name"
  until [[ "$(field_of "$name" ready)" == "1" ]]; do sleep 0.01; done
  until curl -sf -o /dev/null "http://127.0.0.1:$proxy/$name/"; do sleep 0.01; done
  local t0 t1
  t0=$(now)
  wrk -t2 -c4 -d120s "http://127.0.0.1:$proxy/$name/slow?ms=20" >"$work/wrk-$w.out" 2>&1 &
  wrk_pid=$!
  until [[ "$(field_of "$name" ready)" == "3" ]]; do sleep 0.01; done
  t1=$(now)
  kill -TERM "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" 2>/dev/null || true
  wrk_pid=""
  curl -sf -XDELETE "$api/apps/$name" >/dev/null
  local took
  took=$(elapsed "$t0" "$t1")
  echo "windowSeconds $w: load step to 3 ready in ${took}s"
  awk -v t="$took" -v w="$w" -v s="$floor" 'BEGIN {
    printf "  ratio reaction/(windowSeconds + start-to-ready %.3fs) (lower is better, 1 is the floor): %.2f\n", s, t / (w + s) }'
}
react 2
react 5
