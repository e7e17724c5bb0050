#!/usr/bin/env bash
# HTTP benchmark: wrk against troupe's GET /healthz and against nginx serving
# the same static 200 JSON body, in the same run, with the same wrk settings
# and the same server thread count (1 troupe io thread vs 1 nginx worker, then
# 2 vs 2). Reports req/s, latency p50/p99 and the troupe/nginx req/s ratio.
# Then the cost of the token check: GET /jobs/{id} (a route that needs the
# read role) with a bearer token against the same route with auth.mode none,
# one io thread each; the ratio is token/none.
# It reports; it asserts no speed. It fails only if something is broken
# (a server does not start, crashes, answers non-2xx, or wrk gets nothing).
#
#   benchmarks/http_healthz.sh <build-dir>
#
# Environment:
#   BENCH_DURATION   wrk duration per measurement (default 10s)
#   BENCH_WARMUP     wrk warm-up duration per server (default 2s)
#   BENCH_WRK_THREADS, BENCH_CONNECTIONS   wrk -t / -c (default 2 / 100)
#   BENCH_SERVER_THREADS   server thread counts to compare (default "1 2")
#   BENCH_AUTH_ROUNDS      alternating token/none rounds of the token check (default 3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/common.bash"
build="${1:-}"
if [[ -z "$build" ]]; then
  echo "usage: $0 <build-dir>" >&2
  exit 2
fi
build="$(cd "$build" 2>/dev/null && pwd)" || { echo "http_healthz: no such build dir: $1" >&2; exit 2; }
troupe_bin="$build/troupe"
[[ -x "$troupe_bin" ]] || { echo "http_healthz: $troupe_bin not found (build it first)" >&2; exit 2; }

duration="${BENCH_DURATION:-10s}"
warmup="${BENCH_WARMUP:-2s}"
wrk_threads="${BENCH_WRK_THREADS:-2}"
wrk_conns="${BENCH_CONNECTIONS:-100}"
server_threads="${BENCH_SERVER_THREADS:-1 2}"
auth_rounds="${BENCH_AUTH_ROUNDS:-3}"
wrk_args=(-t"$wrk_threads" -c"$wrk_conns")

for tool in wrk nginx curl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "http_healthz: '$tool' is required" >&2; exit 2; }
done
nginx_bin="$(command -v nginx)"

die() { echo "http_healthz: $*" >&2; exit 1; }

# --- cleanup: everything lives under one temp dir; kill whatever we started ---
work="$(mktemp -d "${TMPDIR:-/tmp}/troupe-bench-http.XXXXXX")"
pids=()
trap stop_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {
  local pid="$1" p keep=()
  for p in "${pids[@]:-}"; do [[ -n "$p" && "$p" != "$pid" ]] && keep+=("$p"); done
  pids=("${keep[@]:-}")
}


# Signals a child we started and waits up to ~15 s for it to exit; sets
# child_rc to its exit status ("killed" if it had to be SIGKILLed).
child_rc=""
stop_child() {
  local pid="$1" sig="$2" rc=0
  kill -"$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 150); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
    child_rc=killed
    return 0
  fi
  wait "$pid" 2>/dev/null || rc=$?
  forget_pid "$pid"
  child_rc="$rc"
}


# --- servers ---------------------------------------------------------------
troupe_pid=""
troupe_port=""
troupe_dir=""
start_troupe() {
  local n="$1" tag="${2:-$1}"
  shift 2 || shift $#
  troupe_dir="$work/troupe-$tag"
  mkdir -p "$troupe_dir/cwd" "$troupe_dir/data"
  # --log-level info: the "listening on" line is logged at info; /healthz is a
  # quiet route (its access log line is at debug), so nothing is logged per
  # request during the run.
  (
    cd "$troupe_dir/cwd"
    exec env TROUPE_HTTP__IO_THREADS="$n" "$@" "$troupe_bin" serve --listen 127.0.0.1:0 --proxy-listen 127.0.0.1:0 \
      --data-dir "$troupe_dir/data" --log-level info \
      >"$troupe_dir/stdout.log" 2>"$troupe_dir/stderr.log" </dev/null
  ) &
  troupe_pid=$!
  pids+=("$troupe_pid")
  troupe_port=""
  local line
  for _ in $(seq 100); do
    line="$(head -n 1 "$troupe_dir/stdout.log" 2>/dev/null || true)"
    if [[ "$line" =~ listening\ on\ 127\.0\.0\.1:([0-9]+) ]]; then
      troupe_port="${BASH_REMATCH[1]}"
      break
    fi
    alive "$troupe_pid" || break
    sleep 0.1
  done
  if [[ -z "$troupe_port" ]]; then
    echo "--- troupe stdout:" >&2; cat "$troupe_dir/stdout.log" >&2 || true
    echo "--- troupe stderr:" >&2; cat "$troupe_dir/stderr.log" >&2 || true
    die "troupe (io_threads=$n) did not print 'listening on 127.0.0.1:PORT' within 10 s"
  fi
  if ! wait_http "$troupe_port" "$troupe_pid" troupe; then
    echo "--- troupe stderr:" >&2; cat "$troupe_dir/stderr.log" >&2 || true
    die "troupe (io_threads=$n) is not serving GET /healthz"
  fi
}

stop_troupe() {
  local rc
  alive "$troupe_pid" || {
    rc=0; wait "$troupe_pid" 2>/dev/null || rc=$?; forget_pid "$troupe_pid"
    echo "--- troupe stderr:" >&2; tail -n 20 "$troupe_dir/stderr.log" >&2 || true
    die "troupe died during the benchmark (exit $rc)"
  }
  stop_child "$troupe_pid" TERM; rc="$child_rc"
  if [[ "$rc" != 0 ]]; then
    echo "--- troupe stdout (tail):" >&2; tail -n 20 "$troupe_dir/stdout.log" >&2 || true
    echo "--- troupe stderr (tail):" >&2; tail -n 20 "$troupe_dir/stderr.log" >&2 || true
    die "troupe did not shut down cleanly on SIGTERM (exit: $rc)"
  fi
  # Anything troupe logged above info, or on stderr, is worth seeing.
  local noisy
  noisy="$(grep -E '\b(warn|warning|error|critical)\b' "$troupe_dir/stdout.log" || true)"
  if [[ -n "$noisy" || -s "$troupe_dir/stderr.log" ]]; then
    echo "note: troupe (io_threads=$1) logged warnings/errors:" >&2
    { printf '%s\n' "$noisy"; cat "$troupe_dir/stderr.log"; } | grep -v '^$' | head -n 20 >&2
  fi
}

nginx_pid=""
nginx_port=""
nginx_dir=""
start_nginx() {
  local n="$1" attempt msg
  nginx_dir="$work/nginx-$n"
  mkdir -p "$nginx_dir/logs"
  # A port that looked free can still be taken by the time nginx binds it:
  # retry with another port on "Address already in use".
  for attempt in 1 2 3; do
    nginx_port="$(free_port)" || die "no free loopback port found"
    sed -e "s|@WORKERS@|$n|g" -e "s|@PREFIX@|$nginx_dir|g" -e "s|@PORT@|$nginx_port|g" \
      "$here/nginx-static.conf.in" >"$nginx_dir/nginx.conf"
    "$nginx_bin" -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -g 'daemon off;' \
      >"$nginx_dir/stdout.log" 2>"$nginx_dir/stderr.log" </dev/null &
    nginx_pid=$!
    pids+=("$nginx_pid")
    msg="$(wait_http "$nginx_port" "$nginx_pid" nginx 2>&1)" && return 0
    stop_child "$nginx_pid" QUIT
    grep -q 'Address already in use' "$nginx_dir/stderr.log" "$nginx_dir/error.log" 2>/dev/null && ((attempt < 3)) && continue
    break
  done
  echo "$msg" >&2
  echo "--- nginx stderr:" >&2; cat "$nginx_dir/stderr.log" >&2 || true
  echo "--- nginx error.log:" >&2; cat "$nginx_dir/error.log" >&2 2>/dev/null || true
  die "nginx (worker_processes $n) did not come up on 127.0.0.1:$nginx_port"
}

stop_nginx() {
  alive "$nginx_pid" || die "nginx died during the benchmark"
  local rc
  stop_child "$nginx_pid" QUIT; rc="$child_rc"
  [[ "$rc" == 0 ]] || echo "note: nginx exited with $rc" >&2
}

# Waits (≤10 s) for GET /healthz to answer 200; returns 1 (with a message on
# stderr) if the server exits or does not answer in time.
wait_http() {
  local port="$1" pid="$2" name="$3" code
  for _ in $(seq 100); do
    if ! alive "$pid"; then
      echo "http_healthz: $name exited during startup" >&2
      return 1
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/healthz" || true)"
    [[ "$code" == 200 ]] && return 0
    sleep 0.1
  done
  echo "http_healthz: $name on 127.0.0.1:$port did not answer GET /healthz with 200 within 10 s" >&2
  return 1
}

# --- wrk -------------------------------------------------------------------

# Runs wrk in the background and waits for it, so that a signal to this script
# is handled at once (the EXIT trap then stops wrk with the servers).
run_wrk() {
  local out="$1" pid rc=0
  shift
  wrk "$@" >"$out" 2>&1 </dev/null &
  pid=$!
  pids+=("$pid")
  wait "$pid" || rc=$?
  forget_pid "$pid"
  return "$rc"
}

# Warms up, then measures; sets rps, p50, p99 (ms), requests, sock_errors, non2xx.
measure() {
  local url="$1" out="$2"
  shift 2
  run_wrk /dev/null "${wrk_args[@]}" "$@" -d"$warmup" "$url" || true
  run_wrk "$out" "${wrk_args[@]}" "$@" -d"$duration" --latency "$url" || die "wrk failed: $(cat "$out")"
  rps="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")"
  p50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")"
  p99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")"
  requests="$(awk '/requests in/ {print $1}' "$out")"
  sock_errors="$(awk -F'[ ,]+' '/Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s + 0 }' "$out")"
  non2xx="$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' "$out")"
  : "${sock_errors:=0}" "${non2xx:=0}"
  [[ -n "$rps" && -n "$requests" && "$requests" != 0 ]] || die "wrk produced no requests: $(cat "$out")"
}

# --- run -------------------------------------------------------------------
header="http /healthz (wrk ${wrk_args[*]} -d$duration --latency; warm-up $warmup)"
table="$work/table.txt"
results="$work/results.txt"
printf '%-8s %-7s %10s %10s %10s %8s %8s\n' threads server req/s p50 p99 sockerr non2xx >"$table"
: >"$results"
failures=0

for n in $server_threads; do
  echo "-- server threads: $n (troupe io threads / nginx workers)" >&2

  start_troupe "$n"
  measure "http://127.0.0.1:$troupe_port/healthz" "$work/wrk-troupe-$n.txt"
  t_rps=$rps t_p50=$p50 t_p99=$p99 t_err=$sock_errors t_non2xx=$non2xx
  stop_troupe "$n"

  start_nginx "$n"
  measure "http://127.0.0.1:$nginx_port/healthz" "$work/wrk-nginx-$n.txt"
  g_rps=$rps g_p50=$p50 g_p99=$p99 g_err=$sock_errors g_non2xx=$non2xx
  stop_nginx

  ratio="$(awk -v a="$t_rps" -v b="$g_rps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')"
  printf '%-8s %-7s %10s %9sms %9sms %8s %8s\n' "$n" troupe "$t_rps" "$t_p50" "$t_p99" "$t_err" "$t_non2xx" >>"$table"
  printf '%-8s %-7s %10s %9sms %9sms %8s %8s\n' "$n" nginx "$g_rps" "$g_p50" "$g_p99" "$g_err" "$g_non2xx" >>"$table"
  printf '%-8s %-7s %10s\n' "$n" ratio "$ratio" >>"$table"
  echo "RESULT http_healthz threads=$n troupe_rps=$t_rps nginx_rps=$g_rps ratio=$ratio" \
    "troupe_p50_ms=$t_p50 troupe_p99_ms=$t_p99 nginx_p50_ms=$g_p50 nginx_p99_ms=$g_p99" \
    "troupe_socket_errors=$t_err troupe_non2xx=$t_non2xx" >>"$results"

  if [[ "$t_non2xx" != 0 ]]; then
    echo "http_healthz: troupe answered $t_non2xx non-2xx/3xx responses to GET /healthz (threads=$n)" >&2
    failures=$((failures + 1))
  fi
  if [[ "$t_err" != 0 ]]; then
    echo "note: wrk saw $t_err socket errors against troupe (threads=$n):" >&2
    grep 'Socket errors' "$work/wrk-troupe-$n.txt" >&2 || true
  fi
done

# --- the token check ----------------------------------------------------------
# BENCH_AUTH_ROUNDS rounds, the order alternating (token first, then none first),
# so drift in the machine's load falls on both; the ratio is of the medians.
token="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
auth_env=(TROUPE_AUTH__TOKENS="[{\"name\":\"bench\",\"token\":\"$token\",\"roles\":[\"admin\"]}]")
declare -A auth_runs=([token]="" [none]="")
for round in $(seq "$auth_rounds"); do
  order="token none"
  (( round % 2 == 0 )) && order="none token"
  for mode in $order; do
    if [[ $mode == token ]]; then
      start_troupe 1 "auth-$mode-$round" "${auth_env[@]}"
      hdr=(-H "Authorization: Bearer $token")
    else
      start_troupe 1 "auth-$mode-$round" TROUPE_AUTH__MODE=none
      hdr=()
    fi
    job="$(curl -s -XPOST "${hdr[@]}" -H 'Content-Type: application/json' -d '{"command":"true"}' \
      "http://127.0.0.1:$troupe_port/jobs" | sed -n 's/.*"job_id":"\([^"]*\)".*/\1/p')"
    [[ -n "$job" ]] || die "could not submit a job to troupe (auth $mode)"
    measure "http://127.0.0.1:$troupe_port/jobs/$job" "$work/wrk-auth-$mode-$round.txt" "${hdr[@]}"
    auth_runs[$mode]+="$rps "
    printf '%-8s %-7s %10s %9sms %9sms %8s %8s\n' 1 "$mode" "$rps" "$p50" "$p99" "$sock_errors" "$non2xx" >>"$table"
    if [[ "$non2xx" != 0 ]]; then
      echo "http_healthz: troupe answered $non2xx non-2xx responses to GET /jobs/{id} (auth $mode)" >&2
      failures=$((failures + 1))
    fi
    stop_troupe "auth-$mode-$round"
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
tok_rps="$(median "${auth_runs[token]}")"
none_rps="$(median "${auth_runs[none]}")"
auth_ratio="$(awk -v a="$tok_rps" -v b="$none_rps" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }')"
printf '%-8s %-7s %10s\n' 1 "tok/none" "$auth_ratio" >>"$table"
echo "RESULT http_auth route=/jobs/{id} rounds=$auth_rounds token_rps_median=$tok_rps none_rps_median=$none_rps ratio=$auth_ratio token_runs=\"${auth_runs[token]% }\" none_runs=\"${auth_runs[none]% }\"" >>"$results"

echo "$header"
cat "$table"
cat "$results"
[[ $failures -eq 0 ]] || exit 1
