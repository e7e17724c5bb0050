#!/usr/bin/env bash
# Proxy benchmark (issue 13): the same two nginx `return 200` backends behind
# troupe's built-in proxy (1 io thread), nginx `proxy_pass` with an upstream
# keepalive pool (1 worker) and haproxy (nbthread 1), one after another with
# the same wrk settings. Each proxy adds the same fields (X-Forwarded-For,
# -Proto, -Host, X-Request-ID up, X-Request-ID down) and reuses upstream
# connections. The backends are troupe's own app instances: an app
# whose command runs nginx on $PORT, so troupe routes to them as it routes to
# any app, and the peers are pointed at the very same two ports.
# Reports req/s, p50/p99 of each and the ratios troupe/haproxy and
# troupe/nginx (req/s) and troupe/nginx (p99); then each proxy's memory per
# idle client connection (RSS growth with BENCH_IDLE_CONNECTIONS open).
# It reports; it asserts no speed. It fails only if something is broken.
#
#   benchmarks/proxy.sh <build-dir>
#
# Environment:
#   BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_WRK_THREADS (2),
#   BENCH_CONNECTIONS (100), BENCH_ROUNDS (1: rounds, the order rotating),
#   BENCH_IDLE_CONNECTIONS (1000)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/common.bash"
build="${1:-}"
[[ -n "$build" ]] || { echo "usage: $0 <build-dir>" >&2; exit 2; }
build="$(cd "$build" 2>/dev/null && pwd)" || { echo "proxy: no such build dir: $1" >&2; exit 2; }
troupe_bin="$build/troupe"
[[ -x "$troupe_bin" ]] || { echo "proxy: $troupe_bin not found (build it first)" >&2; exit 2; }
for tool in wrk nginx haproxy curl pgrep; do
  command -v "$tool" >/dev/null 2>&1 || { echo "proxy: '$tool' is required" >&2; exit 2; }
done
nginx_bin="$(command -v nginx)"
haproxy_bin="$(command -v haproxy)"

duration="${BENCH_DURATION:-10s}"
warmup="${BENCH_WARMUP:-2s}"
rounds="${BENCH_ROUNDS:-1}"
idle_n="${BENCH_IDLE_CONNECTIONS:-1000}"
wrk_args=(-t"${BENCH_WRK_THREADS:-2}" -c"${BENCH_CONNECTIONS:-100}")

die() { echo "proxy: $*" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/troupe-bench-proxy.XXXXXX")"
pids=()
trap stop_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits (≤10 s) for GET http://127.0.0.1:PORT/PATH to answer 200.
wait_200() {
  local port="$1" path="$2" pid="$3" name="$4"
  for _ in $(seq 100); do
    alive "$pid" || die "$name exited during startup"
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port$path" || true)" == 200 ]] && return 0
    sleep 0.1
  done
  die "$name on 127.0.0.1:$port did not answer GET $path with 200 within 10 s"
}

# --- troupe with the backends as its app's instances -------------------------
mkdir -p "$work/troupe/data" "$work/troupe/cwd" "$work/backends"
cat >"$work/backends/nginx.conf.in" <<'EOF'
worker_processes 1;
daemon off;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:@PORT@;
        location / { default_type application/json; return 200 '{"status":"ok"}'; }
    }
}
EOF
# One nginx per instance, configured for the PORT troupe hands it.
cat >"$work/backends/run.sh" <<EOF
#!/bin/sh
set -e
dir="$work/backends/\$PORT"
mkdir -p "\$dir"
sed -e "s|@DIR@|\$dir|g" -e "s|@PORT@|\$PORT|g" "$work/backends/nginx.conf.in" >"\$dir/nginx.conf"
exec "$nginx_bin" -p "\$dir" -c "\$dir/nginx.conf"
EOF
chmod +x "$work/backends/run.sh"

proxy_port="$(free_port)"
(
  cd "$work/troupe/cwd"
  exec env TROUPE_AUTH__MODE=none TROUPE_PROXY__HEADER_TIMEOUT=600s \
    TROUPE_PROXY__CLIENT_IDLE_TIMEOUT=600s "$troupe_bin" serve --listen 127.0.0.1:0 \
    --proxy-listen "127.0.0.1:$proxy_port" --data-dir "$work/troupe/data" --log-level info \
    >"$work/troupe/out.log" 2>&1 </dev/null
) &
troupe_pid=$!
pids+=("$troupe_pid")
api_port="$(wait_troupe_port "$work/troupe/out.log" "$troupe_pid")" || die "troupe did not start"
wait_200 "$api_port" /healthz "$troupe_pid" troupe

spec='{"apiVersion":"v1","kind":"App","metadata":{"name":"bench"},
 "spec":{"type":"http","command":["'"$work/backends/run.sh"'"],"ports":[{"containerPort":8080}],
 "health":{"httpGet":{"path":"/"},"intervalSeconds":5},
 "scaling":{"minReplicas":1,"maxReplicas":2,"replicas":2}}}'
curl -sf -XPOST -H 'Content-Type: application/json' --data-binary "$spec" \
  "http://127.0.0.1:$api_port/apps/register" >/dev/null || die "register failed"
curl -sf -XPOST "http://127.0.0.1:$api_port/apps/bench/up" >/dev/null || die "up failed"
status=""
for _ in $(seq 200); do
  status="$(curl -sf "http://127.0.0.1:$api_port/apps/bench/status" || true)"
  [[ "$status" == *'"ready":2'* ]] && break
  sleep 0.05
done
[[ "$status" == *'"ready":2'* ]] || die "the two backends did not become ready: $status"
mapfile -t backend_ports < <(grep -o '"ports":\[[0-9]*\]' <<<"$status" | grep -o '[0-9]\+')
((${#backend_ports[@]} == 2)) || die "expected two backend ports in: $status"
wait_200 "$proxy_port" /bench/ "$troupe_pid" "troupe's proxy"

# --- the peers ---------------------------------------------------------------
nginx_port="$(free_port)"
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $work/nginx/client_body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    upstream backends {
        server 127.0.0.1:${backend_ports[0]};
        server 127.0.0.1:${backend_ports[1]};
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The forwarding fields troupe's proxy adds, so each does the same work.
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-ID \$request_id;
            add_header X-Request-ID \$request_id;
        }
    }
}
EOF
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" >"$work/nginx/out.log" 2>&1 </dev/null &
nginx_pid=$!
pids+=("$nginx_pid")
wait_200 "$nginx_port" /bench/ "$nginx_pid" "nginx proxy"

haproxy_port="$(free_port)"
mkdir -p "$work/haproxy"
cat >"$work/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 60s
    timeout http-keep-alive 600s
frontend fe
    bind 127.0.0.1:$haproxy_port
    # The forwarding fields troupe's proxy adds, so each does the same work.
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
    unique-id-header X-Request-ID
    http-after-response set-header X-Request-ID %[unique-id]
    default_backend be
backend be
    balance leastconn
    http-reuse always
    server s1 127.0.0.1:${backend_ports[0]}
    server s2 127.0.0.1:${backend_ports[1]}
EOF
"$haproxy_bin" -db -f "$work/haproxy/haproxy.cfg" >"$work/haproxy/out.log" 2>&1 </dev/null &
haproxy_pid=$!
pids+=("$haproxy_pid")
wait_200 "$haproxy_port" /bench/ "$haproxy_pid" haproxy

# --- throughput ----------------------------------------------------------------
# Sets rps, p50, p99 (ms), non2xx, sock_errors from one wrk run at URL.
measure() {
  local url="$1" out="$2"
  wrk "${wrk_args[@]}" -d"$warmup" "$url" >/dev/null 2>&1 || true
  wrk "${wrk_args[@]}" -d"$duration" --latency "$url" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
  rps="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")"
  p50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")"
  p99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")"
  non2xx="$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' "$out")"
  sock_errors="$(awk -F'[ ,]+' '/Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s + 0 }' "$out")"
  : "${non2xx:=0}" "${sock_errors:=0}"
  [[ -n "$rps" && "$rps" != 0 ]] || die "wrk produced no requests: $(cat "$out")"
}

declare -A url=([troupe]="http://127.0.0.1:$proxy_port/bench/"
  [nginx]="http://127.0.0.1:$nginx_port/bench/" [haproxy]="http://127.0.0.1:$haproxy_port/bench/")
declare -A all_rps=() all_p50=() all_p99=()
order=(troupe nginx haproxy)
for round in $(seq "$rounds"); do
  for name in "${order[@]}"; do
    measure "${url[$name]}" "$work/wrk-$name-$round.txt"
    [[ "$non2xx" == 0 ]] || die "$name answered $non2xx non-2xx responses"
    all_rps[$name]+="$rps " all_p50[$name]+="$p50 " all_p99[$name]+="$p99 "
    echo "round $round $name: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, socket errors $sock_errors" >&2
  done
  order=("${order[@]:1}" "${order[0]}")
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }

# --- memory per idle client connection ----------------------------------------
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
# Opens idle_n connections to PORT (a request answered on each first, so
# every one is an idle keep-alive connection), measures PID's RSS growth.
idle_cost() {
  local port="$1" pid="$2" before after fds0 i
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  before="$(rss_kib "$pid")"
  fds0="$(fd_count "$pid")"
  local conns=()
  for i in $(seq "$idle_n"); do
    exec {fd}<>"/dev/tcp/127.0.0.1/$port" || die "connect $i to $port failed"
    printf 'GET /bench/ HTTP/1.1\r\nHost: localhost\r\n\r\n' >&"$fd"
    conns+=("$fd")
  done
  for _ in $(seq 200); do
    (( $(fd_count "$pid") >= fds0 + idle_n )) && break
    sleep 0.05
  done
  after="$(rss_kib "$pid")"
  for fd in "${conns[@]}"; do exec {fd}>&-; done
  awk -v a="$after" -v b="$before" -v n="$idle_n" 'BEGIN { printf "%.1f", (a - b) * 1024 / n }'
}
nginx_worker="$(pgrep -P "$nginx_pid" | head -1)"
t_idle="$(idle_cost "$proxy_port" "$troupe_pid")"
n_idle="$(idle_cost "$nginx_port" "$nginx_worker")"
h_idle="$(idle_cost "$haproxy_port" "$haproxy_pid")"

t_rps="$(median "${all_rps[troupe]}")" n_rps="$(median "${all_rps[nginx]}")" h_rps="$(median "${all_rps[haproxy]}")"
t_p99="$(median "${all_p99[troupe]}")" n_p99="$(median "${all_p99[nginx]}")" h_p99="$(median "${all_p99[haproxy]}")"
t_p50="$(median "${all_p50[troupe]}")" n_p50="$(median "${all_p50[nginx]}")" h_p50="$(median "${all_p50[haproxy]}")"
printf '\nproxy (wrk %s -d%s --latency; %s round(s); two nginx backends)\n' "${wrk_args[*]}" "$duration" "$rounds"
printf '%-8s %10s %10s %10s %16s\n' proxy req/s p50 p99 "bytes/idle conn"
printf '%-8s %10s %9sms %9sms %16s\n' troupe "$t_rps" "$t_p50" "$t_p99" "$t_idle"
printf '%-8s %10s %9sms %9sms %16s\n' nginx "$n_rps" "$n_p50" "$n_p99" "$n_idle"
printf '%-8s %10s %9sms %9sms %16s\n' haproxy "$h_rps" "$h_p50" "$h_p99" "$h_idle"
echo "RESULT proxy troupe_rps=$t_rps nginx_rps=$n_rps haproxy_rps=$h_rps" \
  "rps_vs_haproxy=$(ratio "$t_rps" "$h_rps") rps_vs_nginx=$(ratio "$t_rps" "$n_rps")" \
  "p99_vs_nginx=$(ratio "$t_p99" "$n_p99") troupe_p50_ms=$t_p50 troupe_p99_ms=$t_p99" \
  "nginx_p99_ms=$n_p99 haproxy_p99_ms=$h_p99 idle_bytes_troupe=$t_idle idle_bytes_nginx=$n_idle" \
  "idle_bytes_haproxy=$h_idle"
