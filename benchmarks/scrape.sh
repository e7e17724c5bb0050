#!/usr/bin/env bash
# GET /metrics with many series (default 10,000): an embedded troupe node is
# fed the series through its metrics registry, then scraped over HTTP; the
# peer in the same run is nginx serving the identical exposition bytes as a
# static file. Reports medians and the ratio; asserts no speed.
#
#   benchmarks/scrape.sh <build-dir>
#
# Environment: BENCH_SERIES (default 10000).
set -euo pipefail

build="$(cd "${1:?usage: $0 <build-dir>}" && pwd)"
bench_bin="$build/benchmarks/scrape_bench"
[[ -x "$bench_bin" ]] || { echo "scrape: $bench_bin not found (make bench builds it)" >&2; exit 2; }
command -v nginx >/dev/null || { echo "scrape: nginx is required" >&2; exit 2; }
series="${BENCH_SERIES:-10000}"

work="$(mktemp -d "${TMPDIR:-/tmp}/troupe-bench-scrape.XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]:-}"; do
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

nginx_port=""
for port in $(shuf -i 20000-29999 -n 20); do
  if ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then nginx_port=$port; break; fi
done
mkdir -p "$work/nginx/logs" "$work/www"
# nginx workers run as an unprivileged user: let them read the file.
chmod 755 "$work" "$work/www"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
error_log $work/nginx/logs/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  server { listen 127.0.0.1:$nginx_port; root $work/www; }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$nginx_port) 2>/dev/null && break
  sleep 0.05
done

"$bench_bin" "$work/data" "$series" "http://127.0.0.1:$nginx_port" "$work/www/metrics.txt"
